#!/usr/bin/env bash
# The interoperability suite (issue 13): the real sipedge binary against real third-party
# SIP software, Kamailio 5.6 as fabrikam.test's edge over mutual TLS and SIPp as the user
# agents on either side, each on loopback addresses of its own (127.0.13.x):
#
#   127.0.13.1  the edge's external interface (accessedge.contoso.test), TLS 5061
#   127.0.13.2  the edge's internal interface (edge-int.contoso.test), TCP 5060
#   127.0.13.3  Kamailio (sip.fabrikam.test): mutual TLS 5061, UDP/TCP 5060
#   127.0.13.4  the pool (`sipedge sink`, pool.contoso.test), TCP 5070
#   127.0.13.5  fabrikam's user agents (SIPp, UDP)
#   127.0.13.6  the pool's user agents (SIPp, TCP)
#
#   tests/interop/run.sh [CASE...]   (default: every case: outbound inbound dialog dissect;
#                                     dissect alone runs the others too, for its capture)
#
# Uses $SIPEDGE, else $CARGO_TARGET_DIR (or target)/debug/sipedge, after `cargo build` or
# `cargo test`. Installs kamailio, kamailio-tls-modules, sip-tester and (for dissect) tshark
# from Debian when missing. Every process is started here, remembered by PID and stopped by
# PID (with its descendants, found by parent PID); every wait is bounded. Exit 0 when every
# case passed, 1 when one failed, 2 when the suite could not run. KEEP=1 keeps the logs. Each case asserts on what Kamailio logged (its INTEROP
# xlog lines) and on SIPp's exit status (0 only when its scenario completed).
set -u
cd "$(dirname "$0")/../.."
ROOT="$PWD"
HERE="$ROOT/tests/interop"
SIPEDGE="${SIPEDGE:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/sipedge}"
EDGE_EXT=127.0.13.1 EDGE_INT=127.0.13.2 KAM=127.0.13.3 POOL=127.0.13.4 FAB_UA=127.0.13.5 POOL_UA=127.0.13.6
WAIT_TRIES=200   # 0.1 s each: 20 s for a process to come up or a line to appear

log() { echo "[interop $(date -u +%H:%M:%S)] $*" >&2; }
die() { echo "interop: error: $*" >&2; exit 2; }

need_pkg() { # need_pkg BINARY PACKAGE...
  local bin="$1"; shift
  command -v "$bin" >/dev/null 2>&1 && return 0
  log "installing $* (missing $bin)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; } \
    || die "could not install $*"
}
need_pkg kamailio kamailio kamailio-tls-modules
# kamailio can be there without its tls module (a separate package).
compgen -G "/usr/lib/*/kamailio/modules/tls.so" >/dev/null || compgen -G "/usr/lib/kamailio/modules/tls.so" >/dev/null \
  || need_pkg kamailio-tls-module-not-installed kamailio-tls-modules
need_pkg sipp sip-tester
need_pkg ss iproute2
need_pkg ps procps
for c in "$@"; do
  case "$c" in outbound | inbound | dialog | dissect) ;; *) die "unknown case '$c' (outbound inbound dialog dissect)" ;; esac
done
[ -x "$SIPEDGE" ] || die "$SIPEDGE is missing: run cargo build (or set SIPEDGE)"

tmp="$(mktemp -d /tmp/sipedge-interop.XXXXXX)"
pids=()
descendants() { # descendants PID: its children, theirs, ... (by parent PID)
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done
}
kill_tree() { # kill_tree PID: SIGTERM to PID (Kamailio stops its own workers), a bounded
  # wait, SIGKILL if still there, then SIGKILL to any descendant it left behind.
  local p="$1" kids c i
  kids="$(descendants "$p")"
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p" 2>/dev/null
    for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  fi
  wait "$p" 2>/dev/null
  for c in $kids; do kill -0 "$c" 2>/dev/null && kill -KILL "$c" 2>/dev/null; done
  return 0
}
stop() { # stop PID: stops it and forgets it
  local keep=() p
  kill_tree "$1"
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}
cleanup() {
  local p
  for p in "${pids[@]}"; do kill_tree "$p"; done
  if [ "${KEEP:-0}" = 1 ]; then log "logs kept in $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 2' INT TERM

# start VAR LOG CMD...: runs CMD in the background, output to LOG; VAR gets its PID.
start() { local var="$1" out="$2"; shift 2; "$@" >"$out" 2>&1 & pids+=("$!"); printf -v "$var" '%s' "$!"; }

# wait_listen PROTO ADDR PORT: something listens there (bounded).
wait_listen() {
  local flag=-ltn i
  [ "$1" = udp ] && flag=-lun
  for ((i = 0; i < WAIT_TRIES; i++)); do
    ss -H "$flag" "src $2:$3" 2>/dev/null | grep -q . && return 0
    sleep 0.1
  done
  return 1
}
# wait_log FILE REGEX: a line matching REGEX appears in FILE (bounded); prints it.
wait_log() {
  local i
  for ((i = 0; i < WAIT_TRIES; i++)); do
    grep -E -m1 -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
# wait_exit PID: the process ends (bounded); its exit status.
wait_exit() {
  local i
  for ((i = 0; i < WAIT_TRIES * 2; i++)); do
    kill -0 "$1" 2>/dev/null || { wait "$1"; return $?; }
    sleep 0.1
  done
  return 124
}

# --- Certificates, configs ----------------------------------------------------------
"$SIPEDGE" certs --out "$tmp/certs" >"$tmp/certs.log" 2>&1 || { cat "$tmp/certs.log" >&2; die "sipedge certs failed"; }

cat >"$tmp/edge.toml" <<CFG
# The contoso edge for the suite: fabrikam.test an allowed domain whose ProxyFqdn
# (sip.fabrikam.test, dialled on 5061) is Kamailio's address through [hosts].
[edge]
local_domains = ["contoso.test"]
drain_timeout_ms = 1000

[interfaces.external]
fqdn = "accessedge.contoso.test"
address = "$EDGE_EXT"
tls_port = 5061

[interfaces.external.tls]
cert = "certs/accessedge.contoso.test.crt"
key = "certs/accessedge.contoso.test.key"
trust_anchors = ["certs/ca.crt"]
require_client_cert = true

[interfaces.internal]
fqdn = "edge-int.contoso.test"
address = "$EDGE_INT"
tcp_port = 5060

[pool]
target = "$POOL:5070"
transport = "tcp"

[hosts]
"sip.fabrikam.test" = ["$KAM"]

[access_edge]
allow_federated_users = true
allow_outside_users = true
enable_partner_discovery = false
mark_source_verifiable_on_outgoing_messages = true

[[allowed_domain]]
domain = "fabrikam.test"
proxy_fqdn = "sip.fabrikam.test"

[[external_access_policy]]
identity = "global"
enable_federation_access = true
enable_outside_access = true
CFG
"$SIPEDGE" check-config "$tmp/edge.toml" >"$tmp/check-config.log" 2>&1 || { cat "$tmp/check-config.log" >&2; die "the edge config does not check"; }

sed -e "s#@CERTS@#$tmp/certs#g" "$HERE/tls.cfg" >"$tmp/tls.cfg"
sed -e "s#@KAM@#$KAM#g" -e "s#@EDGE_EXT@#$EDGE_EXT#g" -e "s#@FAB_UA@#$FAB_UA:5062#g" \
  -e "s#@TLS_CFG@#$tmp/tls.cfg#g" "$HERE/kamailio.cfg" >"$tmp/kamailio.cfg"
kamailio -c -f "$tmp/kamailio.cfg" >"$tmp/kamailio-check.log" 2>&1 || { tail -20 "$tmp/kamailio-check.log" >&2; die "the Kamailio config does not check"; }
# Debian's 5.6.3 with OpenSSL 3 can crash when TLS workers handshake at once
# (benches/kamailio/fork_tls_reset.c says why); the shim is preloaded when a C compiler is there.
preload=()
if command -v cc >/dev/null && cc -shared -fPIC -O2 -o "$tmp/fork_tls_reset.so" "$ROOT/benches/kamailio/fork_tls_reset.c" 2>/dev/null; then
  preload=(env "LD_PRELOAD=$tmp/fork_tls_reset.so")
fi

# --- The processes every case shares ---------------------------------------------------
for a in "$EDGE_EXT:5061" "$EDGE_INT:5060" "$KAM:5061" "$KAM:5060" "$POOL:5070"; do
  ss -H -ltn "src $a" | grep -q . && die "$a is in use"
done
mkdir -p "$tmp/run"
start kam "$tmp/kamailio.log" "${preload[@]}" kamailio -f "$tmp/kamailio.cfg" -DD -E -m 64 -M 8 -Y "$tmp/run"
start sink "$tmp/sink.log" "$SIPEDGE" sink --listen "$POOL:5070" --transport tcp --certs "$tmp/certs"
start edge "$tmp/edge.log" "$SIPEDGE" run --config "$tmp/edge.toml" --log-format json
wait_listen tcp "$KAM" 5061 && wait_listen udp "$KAM" 5060 || { tail "$tmp/kamailio.log" >&2; die "Kamailio did not start"; }
wait_listen tcp "$POOL" 5070 || { tail "$tmp/sink.log" >&2; die "the sink did not start"; }
wait_listen tcp "$EDGE_EXT" 5061 && wait_listen tcp "$EDGE_INT" 5060 || { tail "$tmp/edge.log" >&2; die "the edge did not start"; }

# sipp_run NAME ARGS...: SIPp in the foreground, one call, bounded by its own -timeout;
# its exit status (0: the scenario completed).
sipp_run() {
  local name="$1"; shift
  (cd "$tmp" && timeout 40 sipp -nostdin -m 1 -timeout 25s -timeout_error -trace_msg -message_file "$tmp/$name.msg" \
    -trace_err -error_file "$tmp/$name.err" "$@" >"$tmp/$name.out" 2>&1)
}

failed=() passed=()
check() { # check CASE DESCRIPTION CONDITION...
  local c="$1" d="$2"; shift 2
  if "$@"; then log "  ok: $d"; else log "  FAILED: $d"; case_ok=0; fi
}
re() { printf '%s' "${1//./\\.}"; }   # an address as a regex
has_line() { grep -q -E -- "$1" "$2"; }
show_on_failure() { # files to show when the case failed
  [ "$case_ok" = 1 ] && return
  local f
  for f in "$@"; do [ -e "$f" ] && { echo "---- $f" >&2; tail -40 "$f" >&2; }; done
}

# --- Case 1: outbound MESSAGE, the pool's SIPp -> edge -> Kamailio over mutual TLS -----
case_outbound() {
  local mark_before
  sipp_run outbound -sf "$HERE/scenarios/uac-message.xml" -t t1 -i "$POOL_UA" -p 5064 \
    -key from sip:alice@contoso.test -key to sip:dan@fabrikam.test -key mark no "$EDGE_INT:5060"
  local rc=$?
  check outbound "SIPp (pool side) got Kamailio's 200 through the edge (sipp exit $rc)" [ "$rc" = 0 ]
  check outbound "Kamailio received the MESSAGE over TLS from the edge with the client certificate verified (CN accessedge.contoso.test)" \
    has_line "INTEROP request MESSAGE sip:dan@fabrikam\.test from $(re "$EDGE_EXT"):[0-9]+ proto=tls verified=1 peer_cn=accessedge\.contoso\.test" "$tmp/kamailio.log"
  show_on_failure "$tmp/outbound.out" "$tmp/outbound.msg" "$tmp/kamailio.log" "$tmp/edge.log"
}

# --- Case 2: inbound MESSAGE, fabrikam's SIPp -> Kamailio -> (mTLS) edge -> pool -------
case_inbound() {
  sipp_run inbound-marked -sf "$HERE/scenarios/uac-message.xml" -t u1 -i "$FAB_UA" -p 5063 \
    -key from sip:dan@fabrikam.test -key to sip:alice@contoso.test -key mark yes "$KAM:5060"
  local rc=$?
  check inbound "marked: SIPp (fabrikam side) got 200 from the pool through Kamailio and the edge (sipp exit $rc)" [ "$rc" = 0 ]
  check inbound "marked: Kamailio received the edge's 200 over TLS, the edge's server certificate verified" \
    has_line "INTEROP reply 200 OK to MESSAGE from $(re "$EDGE_EXT"):5061 proto=tls verified=1 peer_cn=accessedge\.contoso\.test" "$tmp/kamailio.log"
  sipp_run inbound-unmarked -sf "$HERE/scenarios/uac-message-403.xml" -t u1 -i "$FAB_UA" -p 5063 \
    -key from sip:dan@fabrikam.test -key to sip:alice@contoso.test -key mark no "$KAM:5060"
  rc=$?
  check inbound "unmarked: SIPp (fabrikam side) got 403 with ms-diagnostics 1905 (sipp exit $rc)" [ "$rc" = 0 ]
  check inbound "unmarked: Kamailio received the edge's 403 with 1905 over TLS" \
    has_line "INTEROP reply 403 .* to MESSAGE from $(re "$EDGE_EXT"):5061 proto=tls verified=1 .*diag=1905;" "$tmp/kamailio.log"
  show_on_failure "$tmp/inbound-marked.out" "$tmp/inbound-marked.msg" "$tmp/inbound-unmarked.out" "$tmp/inbound-unmarked.msg" "$tmp/kamailio.log" "$tmp/edge.log"
}

# --- Case 3: INVITE dialog, Kamailio Record-Routes by IP; the pool side hangs up --------
case_dialog() {
  local uas
  start uas "$tmp/dialog-uas.out" sh -c "cd '$tmp' && exec sipp -nostdin -m 1 -timeout 30s -timeout_error -trace_msg -message_file '$tmp/dialog-uas.msg' -sf '$HERE/scenarios/uas-invite.xml' -t u1 -i $FAB_UA -p 5062"
  wait_listen udp "$FAB_UA" 5062 || { log "the SIPp UAS did not start"; case_ok=0; stop "$uas"; return; }
  sipp_run dialog-uac -sf "$HERE/scenarios/uac-invite.xml" -t t1 -i "$POOL_UA" -p 5065 \
    -key from sip:alice@contoso.test -key to sip:dan@fabrikam.test "$EDGE_INT:5060"
  local rc=$?
  wait_exit "$uas"
  local urc=$?
  stop "$uas"
  check dialog "SIPp (pool side, caller) completed INVITE/200/ACK/BYE/200 through the route set (sipp exit $rc)" [ "$rc" = 0 ]
  check dialog "SIPp (fabrikam side, callee) received the ACK and the caller's BYE and answered it (sipp exit $urc)" [ "$urc" = 0 ]
  check dialog "Kamailio Record-Routed by IP (the 200 the caller got names $KAM:5061;transport=tls)" \
    has_line "Record-Route: .*<sip:$(re "$KAM"):5061;transport=tls;r2=on;lr[;>]" "$tmp/dialog-uac.msg"
  check dialog "Kamailio received the BYE over TLS from the edge, verified, and followed its own IP Record-Route" \
    has_line "INTEROP request BYE sip:dan@$(re "$FAB_UA"):5062[^ ]* from $(re "$EDGE_EXT"):[0-9]+ proto=tls verified=1 peer_cn=accessedge\.contoso\.test route=<sip:$(re "$KAM"):5061;transport=tls;" "$tmp/kamailio.log"
  check dialog "Kamailio's loose_route took the BYE on to the callee" \
    has_line "INTEROP loose_route BYE to sip:dan@$(re "$FAB_UA"):5062" "$tmp/kamailio.log"
  show_on_failure "$tmp/dialog-uac.out" "$tmp/dialog-uac.msg" "$tmp/dialog-uas.out" "$tmp/dialog-uas.msg" "$tmp/kamailio.log" "$tmp/edge.log"
}

# --- Case 4: what the edge emitted on the plain-text legs parses in tshark --------------
# The capture runs during the other cases (started before them when this case is asked
# for): the edge's responses to the pool's user agents (from $EDGE_INT:5060) and its requests
# to the pool (to $POOL:5070), over TCP.
PLAIN_FILTER="tcp and ((src host $EDGE_INT and src port 5060) or (dst host $POOL and dst port 5070))"
start_capture() {
  need_pkg dumpcap tshark
  need_pkg tshark tshark
  start capture "$tmp/dumpcap.log" dumpcap -i lo -f "$PLAIN_FILTER" -w "$tmp/plain.pcapng"
  wait_log "$tmp/dumpcap.log" "^File: " >/dev/null || { cat "$tmp/dumpcap.log" >&2; die "dumpcap did not start"; }
}
case_dissect() {
  [ -n "${capture:-}" ] || { log "no capture (the dissect case runs after the others)"; case_ok=0; return; }
  # dumpcap drops what the kernel has not handed it yet when stopped: a marker connection
  # to the pool's port, from outside the edge, comes after everything the cases sent, so
  # once the file holds it, it holds all of that (bounded wait).
  local d=(-r "$tmp/plain.pcapng" -d tcp.port==5070,sip -d tcp.port==5060,sip) i
  (exec 3<>"/dev/tcp/$POOL/5070") 2>/dev/null
  local marker="tcp.dstport==5070 and tcp.flags.syn==1 and tcp.flags.ack==0 and ip.src!=$EDGE_INT"
  for ((i = 0; i < WAIT_TRIES; i++)); do
    tshark -r "$tmp/plain.pcapng" -Y "$marker" 2>/dev/null | grep -q . && break
    sleep 0.1
  done
  stop "$capture"
  check dissect "the capture holds everything up to the marker" [ "$i" -lt "$WAIT_TRIES" ]
  local n bad rc1 rc2 want=0 c
  tshark "${d[@]}" -Y sip -T fields -e frame.number -e sip.Status-Line -e sip.Request-Line >"$tmp/dissect.txt" 2>"$tmp/dissect.err"
  rc1=$?
  tshark "${d[@]}" -Y '_ws.malformed or _ws.expert.severity >= error' >"$tmp/malformed.txt" 2>>"$tmp/dissect.err"
  rc2=$?
  n="$(grep -c . "$tmp/dissect.txt")"
  bad="$(grep -c . "$tmp/malformed.txt")"
  # What the edge sends on these legs per case: outbound its 200 to the caller, inbound the
  # marked MESSAGE to the pool, dialog 180, 200 and the BYE's 200 (its 100 is not counted).
  for c in "${cases[@]}"; do
    case "$c" in outbound) want=$((want + 1)) ;; inbound) want=$((want + 1)) ;; dialog) want=$((want + 3)) ;; esac
  done
  check dissect "tshark ran (exit $rc1, $rc2)" [ "$rc1" = 0 -a "$rc2" = 0 ]
  check dissect "tshark decoded the edge's SIP on the plain-text legs ($n messages, at least $want expected)" [ "$n" -ge "$want" -a "$n" -gt 0 ]
  check dissect "tshark flagged none of the captured frames malformed or in error ($bad frames)" [ "$bad" = 0 ]
  show_on_failure "$tmp/dissect.txt" "$tmp/malformed.txt" "$tmp/dissect.err"
}

cases=("$@")
[ ${#cases[@]} = 0 ] && cases=(outbound inbound dialog dissect)
# dissect inspects what the others sent: it goes last, with the capture started first.
ordered=() want_dissect=0
for c in "${cases[@]}"; do if [ "$c" = dissect ]; then want_dissect=1; else ordered+=("$c"); fi; done
if [ "$want_dissect" = 1 ]; then
  [ ${#ordered[@]} = 0 ] && ordered=(outbound inbound dialog)
  ordered+=(dissect)
  start_capture
fi
cases=("${ordered[@]}")
t0=$SECONDS
for c in "${cases[@]}"; do
  log "case $c"
  case_ok=1
  "case_$c"
  if [ "$case_ok" = 1 ]; then passed+=("$c"); else failed+=("$c"); fi
done
for p in edge sink kam; do kill -0 "${!p}" 2>/dev/null || { log "FAILED: $p exited during the suite"; failed+=("$p-alive"); }; done
log "passed: ${passed[*]:-none}; failed: ${failed[*]:-none}; $((SECONDS - t0)) s"
[ ${#failed[@]} = 0 ]
