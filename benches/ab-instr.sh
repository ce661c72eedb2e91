#!/usr/bin/env bash
# Two edge binaries at the same small fixed load under callgrind: instructions the edge
# executes per relayed transaction. Callgrind counts instructions, not time, so the
# numbers repeat whatever else runs on this shared machine (within a fraction of a per
# cent: timer ticks and retransmissions are the only time-dependent work), which
# `ab-cpu.sh`'s CPU seconds do not.
#
#   benches/ab-instr.sh A_BIN B_BIN [--transport udp|tcp|tls] [--rate N] [--duration S]
#
# Each edge runs `run --config config/bench-<transport>.toml` under
# `valgrind --tool=callgrind`; its counters are zeroed once it listens (start-up and
# certificate loading are not counted), `sipedge load` (this checkout's release binary,
# not under valgrind) sends RATE×DURATION transactions, and the counters are dumped.
# CONFIG_A / CONFIG_B replace the config for one side (an older binary may refuse a newer
# key). Prints one INSTR line per binary with instructions per transaction answered 200, and
# leaves the callgrind files in $OUT (default a new temporary folder) for
# `callgrind_annotate`. Every process is stopped by its PID.
set -u
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,16p' "$0"; exit 2; }
a_bin="$1" b_bin="$2"; shift 2
transport=udp rate=200 duration=10
while [ $# -gt 0 ]; do
  case "$1" in
    --transport) transport="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    *) echo "ab-instr.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
tool=target/release/sipedge
for b in "$a_bin" "$b_bin" "$tool"; do [ -x "$b" ] || { echo "not executable: $b" >&2; exit 2; }; done
command -v valgrind >/dev/null || { echo "ab-instr.sh: needs valgrind (apt-get install valgrind)" >&2; exit 2; }
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; }
trap cleanup EXIT
trap 'exit 2' INT TERM
case "$transport" in tls) port=5061; extra=(--server-name accessedge.contoso.test); sink=(--mtls) ;; *) port=5060; extra=(); sink=() ;; esac

"$tool" sink --listen 127.0.0.1:5070 --transport "$transport" "${sink[@]}" >/dev/null 2>&1 &
pids+=("$!")
for which in A B; do
  bin="$a_bin" config="${CONFIG_A:-config/bench-$transport.toml}"
  [ "$which" = B ] && { bin="$b_bin"; config="${CONFIG_B:-config/bench-$transport.toml}"; }
  valgrind --tool=callgrind --compress-strings=no --compress-pos=no --callgrind-out-file="$out/callgrind.$which.%p" \
    "$bin" run --config "$config" >"$out/edge.$which.log" 2>&1 &
  edge=$!
  up=""
  for _ in $(seq 1 600); do ss -ltnu 2>/dev/null | grep -q ":$port " && { up=1; break; }; sleep 0.1; done
  [ -n "$up" ] || { echo "ab-instr.sh: edge $which did not listen on $port within 60 s" >&2; kill "$edge"; exit 1; }
  callgrind_control --zero "$edge" >/dev/null 2>&1
  line="$("$tool" load --quiet --max-failures 1000000 --target "127.0.0.1:$port" --transport "$transport" \
            --rate "$rate" --duration "$duration" "${extra[@]}" 2>&1 >/dev/null | grep '^RESULT' | tail -n 1)"
  callgrind_control --dump=load "$edge" >/dev/null 2>&1
  kill "$edge"; wait "$edge" 2>/dev/null
  file="$(ls -t "$out"/callgrind."$which".*.1 2>/dev/null | head -n 1)"
  ir="$(sed -nE 's/^summary: ([0-9]+).*/\1/p' "$file" | head -n 1)"
  ok="$(sed -nE 's/.* ok=([0-9]+).*/\1/p' <<<"$line")"
  per="$(awk -v i="${ir:-0}" -v n="${ok:-0}" 'BEGIN { if (n > 0) printf "%.0f", i / n; else print "n/a" }')"
  echo "INSTR bin=$which ($bin) transport=$transport rate=$rate duration=$duration instructions=$ir ok=$ok instructions_per_tx=$per file=$file"
  echo "  $line"
done
