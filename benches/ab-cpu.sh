#!/usr/bin/env bash
# Two edge binaries side by side at the same fixed load: the edge's CPU per relayed
# transaction (user + system time from /proc, over the transactions answered 200) and the
# latency `sipedge load` saw, alternating A and B so drift on a shared machine hits both.
#
#   benches/ab-cpu.sh A_BIN B_BIN [--transport udp|tcp|tls] [--rate N] [--duration S] [--rounds R]
#
# Both run `run --config config/bench-<transport>.toml`; the load generator and the sink
# (the pool) are this checkout's target/release/sipedge. CONFIG_A / CONFIG_B replace the
# config for one side (an older binary may refuse a newer key). Prints one AB line per run and a
# summary line per binary (median µs of edge CPU per transaction). Every process is stopped
# by its PID.
set -u
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,11p' "$0"; exit 2; }
a_bin="$1" b_bin="$2"; shift 2
transport=tls rate=20000 duration=10 rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --transport) transport="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    *) echo "ab-cpu.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
tool=target/release/sipedge
for b in "$a_bin" "$b_bin" "$tool"; do [ -x "$b" ] || { echo "not executable: $b" >&2; exit 2; }; done
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; }
trap cleanup EXIT
trap 'exit 2' INT TERM
hz="$(getconf CLK_TCK)"
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
case "$transport" in tls) port=5061; extra=(--server-name accessedge.contoso.test); sink=(--mtls) ;; *) port=5060; extra=(); sink=() ;; esac

"$tool" sink --listen 127.0.0.1:5070 --transport "$transport" "${sink[@]}" >/dev/null 2>&1 &
pids+=("$!")
declare -A per_tx
for round in $(seq 1 "$rounds"); do
  for which in A B; do
    bin="$a_bin" config="${CONFIG_A:-config/bench-$transport.toml}"
    [ "$which" = B ] && { bin="$b_bin"; config="${CONFIG_B:-config/bench-$transport.toml}"; }
    "$bin" run --config "$config" >/dev/null 2>&1 &
    edge=$!
    for _ in $(seq 1 100); do ss -ltnu 2>/dev/null | grep -q ":$port " && break; sleep 0.05; done
    t0="$(ticks "$edge")"
    line="$("$tool" load --quiet --target "127.0.0.1:$port" --transport "$transport" --rate "$rate" \
              --duration "$duration" "${extra[@]}" 2>&1 >/dev/null | grep '^RESULT' | tail -n 1)"
    t1="$(ticks "$edge")"
    kill "$edge"; wait "$edge" 2>/dev/null
    ok="$(sed -nE 's/.* ok=([0-9]+).*/\1/p' <<<"$line")"
    us="$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="${ok:-0}" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "n/a" }')"
    per_tx[$which]+="$us "
    echo "AB round=$round bin=$which ($bin) transport=$transport rate=$rate edge_cpu_us_per_tx=$us $line"
  done
done
for which in A B; do
  med="$(tr ' ' '\n' <<<"${per_tx[$which]}" | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')"
  echo "AB_SUMMARY bin=$which transport=$transport rate=$rate median_edge_cpu_us_per_tx=$med"
done
