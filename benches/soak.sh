#!/usr/bin/env bash
# Soak: legitimate MESSAGE load over mutual TLS through the edge for SOAK_SECONDS while each
# flood runs in turn for a quarter of it (UDP garbage, a valid-request flood over UDP,
# slowloris over TCP, abandoned TLS handshakes; benches/soak-floods.py). Every
# SAMPLE_SECONDS the edge's RSS, open files and log lines per second go to a CSV; the
# chart is drawn from it (examples/soak_chart.rs, src/load/chart.rs) and a summary per
# phase (peak RSS, legitimate success) is printed. Not a timed test: a script.
#
#   SOAK_SECONDS=600 SAMPLE_SECONDS=60 benches/soak.sh [OUT_DIR]   (default benches/soak-out)
#
# Knobs: LOAD_RATE (legitimate transactions/s, 500), GARBAGE_RATE (15000), VALID_RATE
# (5000), LORIS (1000 connections), HANDSHAKE_RATE (400/s), SIPEDGE (target/release/sipedge),
# PORT_BASE (15060: UDP/TCP there, TLS at +1, the pool at +10).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/load-lib.sh

SOAK_SECONDS="${SOAK_SECONDS:-600}"
SAMPLE_SECONDS="${SAMPLE_SECONDS:-60}"
LOAD_RATE="${LOAD_RATE:-500}"
PORT_BASE="${PORT_BASE:-15060}"
OUT="${1:-benches/soak-out}"
PHASES=(garbage valid slowloris handshakes)
PHASE_SECONDS=$((SOAK_SECONDS / ${#PHASES[@]}))
[ -x "$SIPEDGE" ] || die "$SIPEDGE not built (cargo build --release)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

UDP_PORT=$PORT_BASE
TLS_PORT=$((PORT_BASE + 1))
POOL_PORT=$((PORT_BASE + 10))
# config/bench-tls.toml on other ports, with UDP and TCP beside TLS on the external side.
sed -e "s#\.\./certs/#$PWD/certs/#g" \
    -e "s#^tls_port = 5061#tls_port = $TLS_PORT#" \
    -e "s#127.0.0.1:5070#127.0.0.1:$POOL_PORT#" \
    -e "0,/^tls_port = $TLS_PORT/s//tls_port = $TLS_PORT\nudp_port = $UDP_PORT\ntcp_port = $UDP_PORT/" \
    config/bench-tls.toml >"$OUT/soak.toml"

pids=()
trap stop_tracked EXIT
"$SIPEDGE" sink --listen "127.0.0.1:$POOL_PORT" --transport tls --mtls >/dev/null 2>"$OUT/sink.log" &
pids+=($!)
"$SIPEDGE" --log-format json run --config "$OUT/soak.toml" 2>"$OUT/edge.log" >/dev/null &
edge=$!
pids+=($edge)
for _ in $(seq 100); do grep -q '"transport":"tls"' "$OUT/edge.log" 2>/dev/null && break; sleep 0.1; done
grep -q '"interface":"external","transport":"udp"' "$OUT/edge.log" || die "the edge did not start: $(tail -3 "$OUT/edge.log")"

# --certs: without it `load` takes the certificates beside the running edge's config, and
# that config is the copy in OUT_DIR.
"$SIPEDGE" load --target "127.0.0.1:$TLS_PORT" --transport tls --server-name accessedge.contoso.test --certs "$PWD/certs" \
  --rate "$LOAD_RATE" --duration "$SOAK_SECONDS" --json --quiet >"$OUT/load.json" 2>"$OUT/load.log" &
load=$!
pids+=($load)

echo "t_s,phase,rss_kib,open_files,log_lines_per_s" >"$OUT/soak.csv"
began=$(date +%s)
lines_before=0
sample() {
  local phase="$1" now rss files lines
  now=$(($(date +%s) - began))
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$edge/status")
  files=$(ls "/proc/$edge/fd" | wc -l)
  lines=$(wc -l <"$OUT/edge.log")
  echo "$now,$phase,$rss,$files,$(((lines - lines_before) / SAMPLE_SECONDS))" >>"$OUT/soak.csv"
  lines_before=$lines
}
lines_before=$(wc -l <"$OUT/edge.log")
for phase in "${PHASES[@]}"; do
  log "flood: $phase for ${PHASE_SECONDS}s"
  python3 benches/soak-floods.py "$phase" "$PHASE_SECONDS" 127.0.0.1 "$UDP_PORT" "$TLS_PORT" 2>>"$OUT/floods.log" &
  flood=$!
  pids+=($flood)
  end=$(($(date +%s) + PHASE_SECONDS))
  while [ "$(date +%s)" -lt "$end" ]; do
    sleep "$SAMPLE_SECONDS"
    sample "$phase"
  done
  wait "$flood" || true
done
wait "$load" || true

# Legitimate success per phase, from the load generator's per-second counts.
python3 - "$OUT" "$PHASE_SECONDS" "${PHASES[@]}" <<'PY' | tee "$OUT/summary.txt"
import csv, json, sys
out, phase_s, phases = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
load = json.load(open(f"{out}/load.json"))
rows = list(csv.DictReader(open(f"{out}/soak.csv")))
print(f"legitimate over TLS: sent {load['sent']}, ok {load['ok']}, failed {load['failed']}, timeouts {load['timeouts']}, "
      f"success {100.0 * load['ok'] / max(load['sent'], 1):.3f} %")
for i, p in enumerate(phases):
    secs = [s for s in load["per_second"] if i * phase_s <= s["t"] < (i + 1) * phase_s]
    sent = sum(s["sent"] for s in secs); ok = sum(s["ok"] for s in secs)
    mine = [r for r in rows if r["phase"] == p]
    peak = max((int(r["rss_kib"]) for r in mine), default=0) / 1024
    files = max((int(r["open_files"]) for r in mine), default=0)
    lines = max((int(r["log_lines_per_s"]) for r in mine), default=0)
    print(f"{p}: legitimate {ok}/{sent} ({100.0 * ok / max(sent, 1):.3f} %), peak RSS {peak:.1f} MB, "
          f"peak open files {files}, peak log lines/s {lines}")
PY
cargo run --quiet --release --example soak_chart -- "$OUT/soak.csv" "$OUT/soak.svg" \
  "sipedge soak: ${SOAK_SECONDS}s of TLS load at ${LOAD_RATE}/s, floods: ${PHASES[*]}"
log "CSV $OUT/soak.csv, chart $OUT/soak.svg, summary $OUT/summary.txt"
