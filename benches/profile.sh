#!/usr/bin/env bash
# Where the edge's time goes per relayed MESSAGE, by stage: perf samples (cpu-clock, the
# only event this VM offers) of the release edge under `sipedge load` at a fixed rate,
# grouped by symbol into stages and divided by the messages relayed.
#
#   benches/profile.sh [--transport udp|tcp|tls] [--rate N] [--duration S] [--connections C]
#
# Prints one line per stage: share of the edge's samples and microseconds of CPU per
# relayed transaction (MESSAGE in, MESSAGE out, 200 in, 200 out). Needs `perf` (linux-perf;
# installed with apt-get when missing) and `cargo build --release` first. Every process is
# stopped by its PID.
set -u
cd "$(dirname "$0")/.."
transport=udp rate=4000 duration=15 connections=1
while [ $# -gt 0 ]; do
  case "$1" in
    --transport) transport="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    *) echo "profile.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v perf >/dev/null || apt-get install -y -qq linux-perf >/dev/null 2>&1 || { echo "perf missing" >&2; exit 2; }
bin=target/release/sipedge
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
tmp="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; [ -n "${KEEP_PERF:-}" ] && cp "$tmp/perf.data" "$KEEP_PERF"; rm -rf "$tmp"; }
trap cleanup EXIT

mtls=() port=5060 name=()
if [ "$transport" = tls ]; then mtls=(--mtls); port=5061; name=(--server-name accessedge.contoso.test); fi
"$bin" sink --listen 127.0.0.1:5070 --transport "$transport" "${mtls[@]}" >"$tmp/sink.log" 2>&1 & pids+=("$!")
"$bin" run --config "config/bench-$transport.toml" >"$tmp/edge.log" 2>&1 & edge=$!; pids+=("$edge")
sleep 1
perf record -q -F 1999 -e cpu-clock -p "$edge" -o "$tmp/perf.data" -- sleep "$((duration + 1))" >/dev/null 2>&1 & perf_pid=$!
"$bin" load --target "127.0.0.1:$port" --transport "$transport" "${name[@]}" --rate "$rate" \
  --duration "$duration" --connections "$connections" --json --quiet >"$tmp/load.json"
wait "$perf_pid"
ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$tmp/load.json")
cpu_s=$(perf script -i "$tmp/perf.data" -F time 2>/dev/null | wc -l)
perf report -i "$tmp/perf.data" --stdio --no-children --sort sym 2>/dev/null \
  | awk '/^ +[0-9.]+%/ {print}' >"$tmp/syms.txt"
python3 - "$tmp/syms.txt" "$ok" "$cpu_s" "$transport" "$rate" <<'PY'
import re, sys
syms, ok, samples, transport, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
n = float(samples)
stages = [
    ("tls record crypto", r"ring::|aes|gcm|chacha|poly1305|rustls::crypto"),
    ("tls (rustls framing/state)", r"rustls::|tokio_rustls"),
    ("framing + parse", r"sip::framing|sip::message|sip::header|sip::uri|sip::via|split_commas|CSeq::parse|from_utf8|CharSearcher|trim_matches|memchr"),
    ("decision", r"policy::|request_facts|route_plan|identify|DecisionLog|explain"),
    ("rewrite + serialise", r"proxy::forward|sip::splice|sip::build|rewrite_for|received_edit|pop_values"),
    ("transactions + timers", r"txn::|Core::tick|BinaryHeap|hash|Hasher|hashbrown|server_entry"),
    ("proxy glue", r"sipedge::proxy|sipedge::transport|send_on_server|try_send_now|on_message|set_dest"),
    ("allocator", r"malloc|free|realloc|_int_|alloc::"),
    ("kernel (syscalls, network stack)", r"^\[k\]"),
    ("tokio runtime + channels", r"tokio::|mio::|epoll|futex|mpsc"),
]
share = {s: 0.0 for s, _ in stages}
share["other"] = 0.0
for line in open(syms):
    m = re.match(r"\s+([0-9.]+)%\s+(\[.\])\s+(.*)", line)
    if not m:
        continue
    pct, kind, sym = float(m.group(1)), m.group(2), m.group(3)
    text = kind + " " + sym
    for stage, pat in stages:
        if re.search(pat, sym if not pat.startswith("^") else kind):
            share[stage] += pct
            break
    else:
        share["other"] += pct
cpu_seconds = n / 1999.0
per_txn_us = cpu_seconds / max(ok, 1) * 1e6
print(f"PROFILE transport={transport} rate={rate} relayed={ok} edge_cpu_s={cpu_seconds:.2f} us_per_transaction={per_txn_us:.1f}")
for stage, pct in sorted(share.items(), key=lambda kv: -kv[1]):
    print(f"  {stage:34s} {pct:5.1f}%  {per_txn_us * pct / 100:6.2f} us")
PY
