#!/usr/bin/env python3
"""Pick at most CAP corpus files that together cover the most edges.

`cargo fuzz cmin` keeps every file that adds an edge, smallest first, which can leave more
files than we commit; the smallest CAP of those drop the larger inputs that alone reach some
parsers. This reads the per-file edges from a libFuzzer merge control file and picks greedily
the file adding the most new edges (the smaller one on a tie) until CAP files or no gain.

    target/x86_64-unknown-linux-gnu/release/T -merge=1 -use_counters=0 \
        -merge_control_file=/tmp/T.ctl /tmp/empty corpus-work/T-all
    python3 pick-corpus.py /tmp/T.ctl corpus/T 300
"""
import os
import shutil
import sys

ctl, out, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = open(ctl).read().split("\n")
n = int(lines[0])
paths = lines[2 : 2 + n]
edges = {}
for line in lines[2 + n :]:
    fields = line.split()
    if fields and fields[0] == "COV":
        edges[int(fields[1])] = set(fields[2:])
size = {i: os.path.getsize(paths[i]) for i in edges}
covered, picked = set(), []
while len(picked) < cap and edges:
    best = max(edges, key=lambda i: (len(edges[i] - covered), -size[i]))
    if not edges[best] - covered:
        break
    covered |= edges.pop(best)
    picked.append(best)
os.makedirs(out, exist_ok=True)
for i in picked:
    shutil.copy(paths[i], out)
print(f"{len(picked)} files, {len(covered)} edges, {sum(size[i] for i in picked)} bytes")
