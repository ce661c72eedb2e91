#!/usr/bin/env bash
# sipedge and Kamailio (stateful t_relay) back to back, driven by `sipedge load` with the
# same settings and `sipedge sink` as the UAS on 127.0.0.1:5070: per transport the highest
# MESSAGE rate with zero failures for each, then one COMPARE line.
#
#   benches/compare-load.sh [--budget S] [--step S] [--start RATE] [--connections C] [TRANSPORT...]
#
# TRANSPORT is udp, tcp or tls (default: tls). sipedge runs `target/release/sipedge run
# --config config/bench-<t>.toml` (external 127.0.0.1:5060, TLS 5061); Kamailio gets a
# config equivalent to ../shared/bench/kamailio-anchor.sh's (udp/tcp 5090, tls 5091,
# children=4, -m 2048), with the lab certificate of accessedge.contoso.test on TLS so the
# load generator verifies both proxies the same way. --budget is the search time per
# proxy and transport (default 180 s), --step the length of one fixed-rate run (10 s).
# Run from the repository after `cargo build --release`. Every process is stopped by PID.
set -u
cd "$(dirname "$0")/.."
. benches/load-lib.sh

BUDGET=180 STEP=10 START=1000 CONNECTIONS=1
parse_args "tls" "$@"
command -v kamailio >/dev/null || { apt-get install -y -qq kamailio kamailio-tls-modules >/dev/null 2>&1 || die "kamailio is not installed"; }

tmp="$(mktemp -d)"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do
    for c in $(pid_tree "$p" | tail -n +2); do kill -KILL "$c" 2>/dev/null; done
    stop_pid "$p"
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 2' INT TERM

# start VAR CMD...: runs CMD in the background, remembers its PID for cleanup.
start() { local var="$1"; shift; "$@" >"$tmp/$var.log" 2>&1 & pids+=("$!"); printf -v "$var" '%s' "$!"; }
stop() { stop_pid "$1"; local keep=() p; for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; pids=("${keep[@]}"); }

kamailio_cfg() { # kamailio_cfg TRANSPORT
  local t="$1"
  cat >"$tmp/tls.cfg" <<CFG
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
certificate = $PWD/certs/accessedge.contoso.test.crt
private_key = $PWD/certs/accessedge.contoso.test.key

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
CFG
  cat >"$tmp/kamailio.cfg" <<CFG
#!KAMAILIO
debug=-1
log_stderror=yes
memdbg=5
memlog=5
children=4
tcp_children=4
auto_aliases=no
dns=no
rev_dns=no
sip_warning=no
listen=udp:127.0.0.1:5090
listen=tcp:127.0.0.1:5090
listen=tls:127.0.0.1:5091
enable_tls=yes
tcp_connection_lifetime=3605
tcp_max_connections=4096
tls_max_connections=4096
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "maxfwd.so"
loadmodule "pv.so"
loadmodule "tls.so"
modparam("tls", "config", "$tmp/tls.cfg")
request_route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (\$rd == "contoso.test") {
        \$du = "sip:127.0.0.1:5070;transport=$t";
        if (!t_relay()) { sl_reply_error(); }
        exit;
    }
    sl_send_reply("404", "Not Here");
}
CFG
}

# measure NAME PID PORT TRANSPORT: once the proxy listens, its LOADMAX line (also printed).
measure() {
  wait_port "$3" || { tail "$tmp/$1.log" >&2; die "$1 did not start"; }
  sleep 0.5   # let every worker come up
  # A short warm-up (connections, handshakes, first allocations) outside the search.
  one_step "127.0.0.1:$3" "$4" 200 1 "" "${load_args[@]}" >/dev/null
  local line
  line="$(find_max "$1" "127.0.0.1:$3" "$4" "$2" "${load_args[@]}")"
  echo "$line" >&2
  echo "$line"
}

load_args=(--connections "$CONNECTIONS" --certs certs --cert sip.fabrikam.test --server-name accessedge.contoso.test)
for t in "${transports[@]}"; do
  for p in 5070 5060 5061 5090 5091; do port_free "$p" || die "127.0.0.1:$p is in use"; done
  start sink "$SIPEDGE" sink --listen 127.0.0.1:5070 --transport "$t" --certs certs
  wait_port 5070 || die "sink did not start"

  start sipedge "$SIPEDGE" run --config "config/bench-$t.toml"
  port=5060; [ "$t" = tls ] && port=5061
  s_line="$(measure sipedge "$sipedge" "$port" "$t")"
  stop "$sipedge"

  kamailio_cfg "$t"
  kamailio -c -f "$tmp/kamailio.cfg" >"$tmp/check.log" 2>&1 || { tail "$tmp/check.log" >&2; die "Kamailio config does not check"; }
  mkdir -p "$tmp/run"
  start kamailio kamailio -f "$tmp/kamailio.cfg" -DD -E -m 2048 -M 16 -Y "$tmp/run"
  port=5090; [ "$t" = tls ] && port=5091
  k_line="$(measure kamailio "$kamailio" "$port" "$t")"
  k="$(field "$k_line" mps)"
  # Latency at the same offered load for both: 80 % of Kamailio's maximum.
  at="$(awk -v k="$k" 'BEGIN { printf "%d", k * 0.8 }')"
  k_at="$(one_step "127.0.0.1:$port" "$t" "$at" "$STEP" "$kamailio" "${load_args[@]}")"
  echo "AT80 proxy=kamailio $k_at" >&2
  stop "$kamailio"

  start sipedge "$SIPEDGE" run --config "config/bench-$t.toml"
  port=5060; [ "$t" = tls ] && port=5061
  wait_port "$port" || die "sipedge did not restart"
  sleep 0.5
  one_step "127.0.0.1:$port" "$t" 200 1 "" "${load_args[@]}" >/dev/null
  s_at="$(one_step "127.0.0.1:$port" "$t" "$at" "$STEP" "$sipedge" "${load_args[@]}")"
  echo "AT80 proxy=sipedge $s_at" >&2
  stop "$sipedge"
  stop "$sink"

  s="$(field "$s_line" mps)"
  ratio="$(awk -v s="$s" -v k="$k" 'BEGIN { if (k > 0) printf "%.2f", s / k; else print "-" }')"
  echo "COMPARE transport=$t sipedge=$s kamailio=$k ratio=$ratio sipedge_p99_ms=$(field "$s_line" p99_ms) kamailio_p99_ms=$(field "$k_line" p99_ms) sipedge_cpu_pct=$(field "$s_line" cpu_proxy_pct) kamailio_cpu_pct=$(field "$k_line" cpu_proxy_pct) at80_rate=$at sipedge_at80_p50_ms=$(field "$s_at" p50_ms) sipedge_at80_p99_ms=$(field "$s_at" p99_ms) kamailio_at80_p50_ms=$(field "$k_at" p50_ms) kamailio_at80_p99_ms=$(field "$k_at" p99_ms)"
done
