#!/usr/bin/env bash
# The load generator's own ceiling: `sipedge load` straight against `sipedge sink`, per
# transport, with the same search as compare-load.sh (no proxy in between).
#
#   benches/load-ceiling.sh [--budget S] [--step S] [--start RATE] [--connections C] [TRANSPORT...]
#
# Default: udp tcp tls, 60 s budget per transport, 5 s steps. Run from the repository
# after `cargo build --release`; the sink listens on an ephemeral port.
set -u
cd "$(dirname "$0")/.."
. benches/load-lib.sh

BUDGET=60 STEP=5 START=4000 CONNECTIONS=1
parse_args "udp tcp tls" "$@"

tmp="$(mktemp -d)"
sink=""
trap 'stop_pid "$sink"; rm -rf "$tmp"' EXIT
trap 'exit 2' INT TERM

for t in "${transports[@]}"; do
  "$SIPEDGE" sink --listen 127.0.0.1:0 --transport "$t" --certs certs >"$tmp/sink.out" 2>&1 &
  sink=$!
  addr=""
  for _ in $(seq 50); do addr="$(awk '/^sink listening/ { print $4 }' "$tmp/sink.out")"; [ -n "$addr" ] && break; sleep 0.1; done
  [ -n "$addr" ] || die "sink did not start: $(cat "$tmp/sink.out")"
  find_max load-direct "$addr" "$t" "$sink" --connections "$CONNECTIONS" --certs certs --cert sip.fabrikam.test
  stop_pid "$sink"; sink=""
done
