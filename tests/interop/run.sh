#!/usr/bin/env bash
# The interoperability suite (issue 13): the real sipedge binary against real third-party
# SIP software, Kamailio 5.6 as fabrikam.test's edge over mutual TLS (and as the contoso
# Front End pool) and SIPp as the user agents on either side, each on loopback addresses
# of its own (127.0.13.x):
#
#   127.0.13.1  the edge's external interface (accessedge.contoso.test), TLS 5061
#   127.0.13.2  the edge's internal interface (edge-int.contoso.test), TCP 5060
#   127.0.13.3  Kamailio, sip.fabrikam.test: mutual TLS 5061, UDP/TCP 5060; OPTIONS
#               keep-alives to the edge every second (dispatcher); sanity_check() on
#               every request the edge sends it
#   127.0.13.4  the pool for the first cases (`sipedge sink`, pool.contoso.test), TCP 5070
#   127.0.13.5  fabrikam's user agents (SIPp, UDP: callers 5063, callee/notifier 5062)
#   127.0.13.6  the pool's user agents (SIPp, TCP: callers 5064/5065, callee/notifier 5066)
#   127.0.13.7  Kamailio presenting sip.northwind.test's certificate (the certs case only):
#               mutual TLS 5061, UDP 5060; the edge knows it as sip.litware.test
#   127.0.13.8  Kamailio as the pool with sanity_check() (pool.contoso.test), TCP 5070,
#               for the cases after the first ones (the edge restarts with it as its pool);
#               the pool's callee gives a Contact here when the pool does not Record-Route
#
#   tests/interop/run.sh [CASE...]   (default: every case, in this order)
#     with the sink as the pool:
#       outbound   MESSAGE pool -> edge -> Kamailio over mutual TLS
#       inbound    MESSAGE fabrikam -> Kamailio -> edge -> pool, marked (200), unmarked (403 1905)
#       options    Kamailio's keep-alives to the edge's FQDN and address; OPTIONS to
#                  contoso.test relayed to the pool; the pool's OPTIONS to fabrikam.test and
#                  to the edge itself
#       certs      a Kamailio with another lab leaf (sip.northwind.test): its MESSAGE gets
#                  403 1010; the edge dialling it (as sip.litware.test) answers 504 1010
#       dialog     INVITE dialog, Kamailio Record-Routes by IP, the pool side hangs up
#       outproxy   a UA using the edge as outbound proxy: preloaded Route by FQDN and by IP
#       large      a 30 000-byte MESSAGE each way (more than one TLS record)
#     with Kamailio as the pool:
#       pool       sanity_check() passes on the edge's inbound MESSAGE and INVITE dialog
#       calls      INVITE dialogs both ways: partner Record-Route by IP and by FQDN, pool
#                  Record-Route or not, hang-up from either side; CANCEL/487, a
#                  re-INVITE with an INFO, and PRACK for a reliable 183, both ways
#       subscribe  SUBSCRIBE/NOTIFY dialogs both ways
#     dissect      tshark over the plain-text legs of the cases run (goes last; dissect
#                  alone runs every other case, for its capture)
#
# Uses $SIPEDGE, else $CARGO_TARGET_DIR (or target)/debug/sipedge, after `cargo build` or
# `cargo test`. Installs kamailio, kamailio-tls-modules, sip-tester and (for dissect) tshark
# from Debian when missing. Every process is started here, remembered by PID and stopped by
# PID (with its descendants, found by parent PID); every wait is bounded. Exit 0 when every
# case passed, 1 when one failed, 2 when the suite could not run. KEEP=1 keeps the logs.
# Each case asserts on what Kamailio logged (its INTEROP xlog lines, each with the Call-ID
# SIPp was told to use: -cid_str NAME-...) and on SIPp's exit status (0 only when its
# scenario completed) and its message trace; at the end, that neither Kamailio logged a
# failed sanity_check() on what the edge sent it.
set -u
cd "$(dirname "$0")/../.."
ROOT="$PWD"
HERE="$ROOT/tests/interop"
SIPEDGE="${SIPEDGE:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/sipedge}"
EDGE_EXT=127.0.13.1 EDGE_INT=127.0.13.2 KAM=127.0.13.3 POOL=127.0.13.4 FAB_UA=127.0.13.5 POOL_UA=127.0.13.6
KAM_BAD=127.0.13.7 POOL_K=127.0.13.8
ALL_CASES=(outbound inbound options certs dialog outproxy large pool calls subscribe dissect)
KAMPOOL_CASES=" pool calls subscribe "   # the cases run with Kamailio as the pool
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
  [[ " ${ALL_CASES[*]} " == *" $c "* ]] || die "unknown case '$c' (${ALL_CASES[*]})"
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

# edge_config POOL_ADDRESS FILE: the contoso edge for the suite, its pool at POOL_ADDRESS.
# fabrikam.test is an allowed domain whose ProxyFqdn (sip.fabrikam.test, dialled on 5061)
# is Kamailio's address through [hosts]; litware.test another, whose ProxyFqdn leads to
# the Kamailio presenting sip.northwind.test's certificate (the certs case).
edge_config() {
  cat >"$2" <<CFG
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
target = "$1:5070"
transport = "tcp"

[hosts]
"sip.fabrikam.test" = ["$KAM"]
"sip.litware.test" = ["$KAM_BAD"]

[access_edge]
allow_federated_users = true
allow_outside_users = true
enable_partner_discovery = false
mark_source_verifiable_on_outgoing_messages = true

[[allowed_domain]]
domain = "fabrikam.test"
proxy_fqdn = "sip.fabrikam.test"

[[allowed_domain]]
domain = "litware.test"
proxy_fqdn = "sip.litware.test"

[[external_access_policy]]
identity = "global"
enable_federation_access = true
enable_outside_access = true
CFG
  "$SIPEDGE" check-config "$2" >"$2.check" 2>&1 || { cat "$2.check" >&2; die "the edge config $2 does not check"; }
}
edge_config "$POOL" "$tmp/edge-sink.toml"
edge_config "$POOL_K" "$tmp/edge-kampool.toml"

# kamailio_config ADDRESS LEAF NAME: the partner's config (kamailio.cfg) on ADDRESS, its
# TLS profile (tls.cfg) presenting the lab leaf LEAF, as $tmp/NAME.cfg and $tmp/NAME-tls.cfg.
kamailio_config() {
  sed -e "s#@CERTS@#$tmp/certs#g" -e "s#sip\.fabrikam\.test\.\(crt\|key\)#$2.\1#g" "$HERE/tls.cfg" >"$tmp/$3-tls.cfg"
  sed -e "s#@KAM@#$1#g" -e "s#@EDGE_EXT@#$EDGE_EXT#g" -e "s#@FAB_UA@#$FAB_UA:5062#g" \
    -e "s#@TLS_CFG@#$tmp/$3-tls.cfg#g" -e "s#@DS_LIST@#$tmp/dispatcher.list#g" "$HERE/kamailio.cfg" >"$tmp/$3.cfg"
  kamailio -c -f "$tmp/$3.cfg" -A KEEPALIVE >"$tmp/$3-check.log" 2>&1 || { tail -20 "$tmp/$3-check.log" >&2; die "the Kamailio config $3 does not check"; }
}
# The keep-alive destinations: the edge by FQDN (flag 16: no DNS at start) and by address;
# both inactive (1) and probed (8) from the start, so an answer brings them up.
cat >"$tmp/dispatcher.list" <<LIST
1 sip:accessedge.contoso.test:5061;transport=tls 25
1 sip:$EDGE_EXT:5061;transport=tls 9
LIST
kamailio_config "$KAM" sip.fabrikam.test kamailio
kamailio_config "$KAM_BAD" sip.northwind.test kamailio-bad
sed -e "s#@POOL_K@#$POOL_K#g" -e "s#@EDGE_INT@#$EDGE_INT#g" -e "s#@POOL_UA@#$POOL_UA:5066#g" \
  "$HERE/kamailio-pool.cfg" >"$tmp/kamailio-pool.cfg"
kamailio -c -f "$tmp/kamailio-pool.cfg" >"$tmp/kamailio-pool-check.log" 2>&1 || { tail -20 "$tmp/kamailio-pool-check.log" >&2; die "the Kamailio pool config does not check"; }
# Debian's 5.6.3 with OpenSSL 3 can crash when TLS workers handshake at once
# (benches/kamailio/fork_tls_reset.c says why); the shim is preloaded when a C compiler is there.
preload=()
if command -v cc >/dev/null && cc -shared -fPIC -O2 -o "$tmp/fork_tls_reset.so" "$ROOT/benches/kamailio/fork_tls_reset.c" 2>/dev/null; then
  preload=(env "LD_PRELOAD=$tmp/fork_tls_reset.so")
fi

# --- The processes ----------------------------------------------------------------------
for a in "$EDGE_EXT:5061" "$EDGE_INT:5060" "$KAM:5061" "$KAM:5060" "$POOL:5070" "$KAM_BAD:5061" "$POOL_K:5070"; do
  ss -H -ltn "src $a" | grep -q . && die "$a is in use"
done
mkdir -p "$tmp/run" "$tmp/run-bad" "$tmp/run-pool"
start kam "$tmp/kamailio.log" "${preload[@]}" kamailio -f "$tmp/kamailio.cfg" -A KEEPALIVE -DD -E -m 64 -M 8 -Y "$tmp/run"
start sink "$tmp/sink.log" "$SIPEDGE" sink --listen "$POOL:5070" --transport tcp --certs "$tmp/certs"
wait_listen tcp "$KAM" 5061 && wait_listen udp "$KAM" 5060 || { tail "$tmp/kamailio.log" >&2; die "Kamailio did not start"; }
wait_listen tcp "$POOL" 5070 || { tail "$tmp/sink.log" >&2; die "the sink did not start"; }
edge="" edge_pool="" kam_pool=""
# use_pool sink|kamailio: the edge running with that pool (restarted when it has the other
# one); Kamailio as the pool started the first time it is wanted.
use_pool() {
  [ "$edge_pool" = "$1" ] && return 0
  if [ "$1" = kamailio ] && [ -z "$kam_pool" ]; then
    start kam_pool "$tmp/kamailio-pool.log" kamailio -f "$tmp/kamailio-pool.cfg" -DD -E -m 64 -M 8 -Y "$tmp/run-pool"
    wait_listen tcp "$POOL_K" 5070 || { tail "$tmp/kamailio-pool.log" >&2; die "Kamailio (pool) did not start"; }
  fi
  [ -n "$edge" ] && stop "$edge"
  local cfg="$tmp/edge-sink.toml"
  [ "$1" = kamailio ] && cfg="$tmp/edge-kampool.toml"
  start edge "$tmp/edge-$1.log" "$SIPEDGE" run --config "$cfg" --log-format json
  wait_listen tcp "$EDGE_EXT" 5061 && wait_listen tcp "$EDGE_INT" 5060 || { tail "$tmp/edge-$1.log" >&2; die "the edge did not start"; }
  edge_pool="$1"
}

# sipp_run NAME ARGS...: SIPp in the foreground, one call whose Call-ID starts with NAME-,
# bounded by its own -timeout; its exit status (0: the scenario completed).
sipp_run() {
  local name="$1"; shift
  (cd "$tmp" && timeout 40 sipp -nostdin -m 1 -timeout 25s -timeout_error -cid_str "$name-%u-%p@%s" \
    -trace_msg -message_file "$tmp/$name.msg" -trace_err -error_file "$tmp/$name.err" "$@" >"$tmp/$name.out" 2>&1)
}
# sipp_uas VAR NAME ADDR PORT TRANSPORT SCENARIO CONTACT: a SIPp UAS in the background for
# one call (VAR gets its PID), answering with CONTACT, once it listens.
sipp_uas() {
  local var="$1" name="$2" addr="$3" port="$4" tr="$5" sf="$6" contact="$7" flag=udp
  start "$var" "$tmp/$name.out" sh -c "cd '$tmp' && exec sipp -nostdin -m 1 -timeout 25s -timeout_error -trace_msg -message_file '$tmp/$name.msg' -trace_err -error_file '$tmp/$name.err' -sf '$HERE/scenarios/$sf' -t $tr -i $addr -p $port -key contact '$contact'"
  [ "$tr" = t1 ] && flag=tcp
  wait_listen "$flag" "$addr" "$port"
}
FAB_CONTACT="sip:callee@$FAB_UA:5062;transport=udp"

failed=() passed=()
check() { # check CASE DESCRIPTION CONDITION...
  local c="$1" d="$2"; shift 2
  if "$@"; then log "  ok: $d"; else log "  FAILED: $d"; case_ok=0; fi
}
re() { printf '%s' "${1//./\\.}"; }   # an address as a regex
has_line() { grep -q -E -- "$1" "$2"; }
no_line() { ! grep -q -E -- "$1" "$2"; }
count() { grep -c -E -- "$1" "$2"; }
edge_log() { echo "$tmp/edge-$edge_pool.log"; }
show_on_failure() { # files to show when the case failed
  [ "$case_ok" = 1 ] && return
  local f
  for f in "$@"; do [ -e "$f" ] && { echo "---- $f" >&2; tail -40 "$f" >&2; }; done
}
# What the edge must at least send on the plain-text legs, added up by each case for
# dissect: how many messages, and which request methods.
plain_min=0 plain_methods=""
TLS_FROM_EDGE="from $(re "$EDGE_EXT"):[0-9]+ proto=tls verified=1 peer_cn=accessedge\.contoso\.test"
REPLY_FROM_EDGE="from $(re "$EDGE_EXT"):5061 proto=tls verified=1 peer_cn=accessedge\.contoso\.test"

# --- outbound: MESSAGE, the pool's SIPp -> edge -> Kamailio over mutual TLS ------------
case_outbound() {
  sipp_run outbound -sf "$HERE/scenarios/uac-message.xml" -t t1 -i "$POOL_UA" -p 5064 \
    -key from sip:alice@contoso.test -key to sip:dan@fabrikam.test -key mark no -key body "interop message" "$EDGE_INT:5060"
  local rc=$?
  check outbound "SIPp (pool side) got Kamailio's 200 through the edge (sipp exit $rc)" [ "$rc" = 0 ]
  check outbound "Kamailio received the MESSAGE over TLS from the edge with the client certificate verified (CN accessedge.contoso.test)" \
    has_line "INTEROP request MESSAGE sip:dan@fabrikam\.test $TLS_FROM_EDGE .*ci=outbound-" "$tmp/kamailio.log"
  plain_min=$((plain_min + 1))
  show_on_failure "$tmp/outbound.out" "$tmp/outbound.msg" "$tmp/kamailio.log" "$(edge_log)"
}

# --- inbound: MESSAGE, fabrikam's SIPp -> Kamailio -> (mTLS) edge -> pool ----------------
case_inbound() {
  sipp_run inbound-marked -sf "$HERE/scenarios/uac-message.xml" -t u1 -i "$FAB_UA" -p 5063 \
    -key from sip:dan@fabrikam.test -key to sip:alice@contoso.test -key mark yes -key body "interop message" "$KAM:5060"
  local rc=$?
  check inbound "marked: SIPp (fabrikam side) got 200 from the pool through Kamailio and the edge (sipp exit $rc)" [ "$rc" = 0 ]
  check inbound "marked: Kamailio received the edge's 200 over TLS, the edge's server certificate verified" \
    has_line "INTEROP reply 200 OK to MESSAGE $REPLY_FROM_EDGE .*ci=inbound-marked-" "$tmp/kamailio.log"
  sipp_run inbound-unmarked -sf "$HERE/scenarios/uac-message-403.xml" -t u1 -i "$FAB_UA" -p 5063 \
    -key from sip:dan@fabrikam.test -key to sip:alice@contoso.test -key mark no "$KAM:5060"
  rc=$?
  check inbound "unmarked: SIPp (fabrikam side) got 403 with ms-diagnostics 1905 (sipp exit $rc)" [ "$rc" = 0 ]
  check inbound "unmarked: Kamailio received the edge's 403 with 1905 over TLS" \
    has_line "INTEROP reply 403 .* to MESSAGE $REPLY_FROM_EDGE .*diag=1905;.*ci=inbound-unmarked-" "$tmp/kamailio.log"
  plain_min=$((plain_min + 1)) plain_methods+=" MESSAGE"
  show_on_failure "$tmp/inbound-marked.out" "$tmp/inbound-marked.msg" "$tmp/inbound-unmarked.out" "$tmp/inbound-unmarked.msg" "$tmp/kamailio.log" "$(edge_log)"
}

# --- options: keep-alives both ways over mutual TLS ---------------------------------------
# The edge answers OPTIONS addressed to itself (by FQDN or address, no user part) with 200
# before any policy; OPTIONS to a domain is a request like any other: to contoso.test it
# goes to the pool (with the partner's marking), to fabrikam.test out to the partner.
case_options() {
  local k
  for k in "sip:accessedge\.contoso\.test:5061;transport=tls" "sip:$(re "$EDGE_EXT"):5061;transport=tls"; do
    check options "Kamailio's dispatcher sent OPTIONS keep-alives to ${k//\\/} and marked it up on the edge's 200 (over its verified TLS client connection)" \
      wait_log "$tmp/kamailio.log" "INTEROP keepalive up $k\$"
  done
  check options "Kamailio marked no keep-alive destination down" no_line "INTEROP keepalive down" "$tmp/kamailio.log"
  sipp_run options-in -sf "$HERE/scenarios/uac-options.xml" -t u1 -i "$FAB_UA" -p 5063 \
    -key from sip:dan@fabrikam.test -key to sip:contoso.test -key mark yes "$KAM:5060"
  local rc=$?
  check options "OPTIONS sip:contoso.test from fabrikam: SIPp got the pool's 200 through Kamailio and the edge (sipp exit $rc)" [ "$rc" = 0 ]
  check options "OPTIONS sip:contoso.test: Kamailio received the 200 from the edge over verified TLS" \
    has_line "INTEROP reply 200 OK to OPTIONS $REPLY_FROM_EDGE .*ci=options-in-" "$tmp/kamailio.log"
  sipp_run options-out -sf "$HERE/scenarios/uac-options.xml" -t t1 -i "$POOL_UA" -p 5064 \
    -key from sip:alice@contoso.test -key to sip:fabrikam.test -key mark no "$EDGE_INT:5060"
  rc=$?
  check options "OPTIONS sip:fabrikam.test from the pool: SIPp got Kamailio's 200 through the edge (sipp exit $rc)" [ "$rc" = 0 ]
  check options "OPTIONS sip:fabrikam.test: Kamailio received it from the edge over verified TLS" \
    has_line "INTEROP request OPTIONS sip:fabrikam\.test $TLS_FROM_EDGE .*ci=options-out-" "$tmp/kamailio.log"
  sipp_run options-edge -sf "$HERE/scenarios/uac-options.xml" -t t1 -i "$POOL_UA" -p 5064 \
    -key from sip:alice@contoso.test -key to sip:edge-int.contoso.test -key mark no "$EDGE_INT:5060"
  rc=$?
  check options "OPTIONS sip:edge-int.contoso.test from the pool: SIPp got the edge's own 200 (sipp exit $rc)" [ "$rc" = 0 ]
  check options "OPTIONS sip:edge-int.contoso.test: the 200 SIPp got names the methods the edge relays (Allow)" \
    has_line "^Allow: .*SUBSCRIBE" "$tmp/options-edge.msg"
  check options "OPTIONS sip:edge-int.contoso.test went no further (Kamailio never saw it)" no_line "ci=options-edge-" "$tmp/kamailio.log"
  plain_min=$((plain_min + 3)) plain_methods+=" OPTIONS"
  show_on_failure "$tmp/options-in.out" "$tmp/options-in.msg" "$tmp/options-out.out" "$tmp/options-out.msg" "$tmp/options-edge.msg" "$tmp/kamailio.log" "$(edge_log)"
}

# --- certs: a certificate that is not the partner's, either side (1010) ----------------
case_certs() {
  local bad
  start bad "$tmp/kamailio-bad.log" "${preload[@]}" kamailio -f "$tmp/kamailio-bad.cfg" -DD -E -m 64 -M 8 -Y "$tmp/run-bad"
  wait_listen tcp "$KAM_BAD" 5061 && wait_listen udp "$KAM_BAD" 5060 || { log "Kamailio (northwind's certificate) did not start"; case_ok=0; stop "$bad"; return; }
  # (a) Kamailio relays fabrikam's marked MESSAGE with sip.northwind.test's certificate:
  # the certificate does not name fabrikam.test's ProxyFqdn.
  sipp_run certs-in -sf "$HERE/scenarios/uac-message-403-1010.xml" -t u1 -i "$FAB_UA" -p 5063 \
    -key from sip:dan@fabrikam.test -key to sip:alice@contoso.test -key mark yes "$KAM_BAD:5060"
  local rc=$?
  check certs "a partner presenting sip.northwind.test's certificate for fabrikam.test: SIPp got 403 with ms-diagnostics 1010 (sipp exit $rc)" [ "$rc" = 0 ]
  check certs "Kamailio (northwind's certificate) received the edge's 403 with 1010 over TLS, having verified the edge" \
    has_line "INTEROP reply 403 .* to MESSAGE $REPLY_FROM_EDGE .*diag=1010;.*ci=certs-in-" "$tmp/kamailio-bad.log"
  # (b) the edge dials sip.litware.test (Kamailio's address through [hosts]), which answers
  # with sip.northwind.test's certificate.
  sipp_run certs-out -sf "$HERE/scenarios/uac-message-504-1010.xml" -t t1 -i "$POOL_UA" -p 5064 \
    -key from sip:alice@contoso.test -key to sip:bob@litware.test -key mark no "$EDGE_INT:5060"
  rc=$?
  check certs "the edge dialling a server whose certificate is sip.northwind.test's for sip.litware.test: SIPp got 504 with ms-diagnostics 1010 (sipp exit $rc)" [ "$rc" = 0 ]
  check certs "the 504 names the target whose certificate did not match" \
    has_line "^ms-diagnostics(-public)?: *1010;.*sip\.litware\.test" "$tmp/certs-out.msg"
  check certs "Kamailio (northwind's certificate) logged the edge's bad_certificate alert in the handshake the edge opened with SNI sip.litware.test" \
    has_line "alert bad certificate \(sni: sip\.litware\.test\)" "$tmp/kamailio-bad.log"
  check certs "Kamailio (northwind's certificate) received no request from the edge" \
    no_line "INTEROP request .* from $(re "$EDGE_EXT")" "$tmp/kamailio-bad.log"
  stop "$bad"
  plain_min=$((plain_min + 1))
  show_on_failure "$tmp/certs-in.out" "$tmp/certs-in.msg" "$tmp/certs-out.out" "$tmp/certs-out.msg" "$tmp/kamailio-bad.log" "$(edge_log)"
}

# --- dialog: INVITE dialog, Kamailio Record-Routes by IP; the pool side hangs up --------
# The pool's SIPp talks to the edge directly (the sink is the pool).
case_dialog() {
  local uas
  sipp_uas uas dialog-uas "$FAB_UA" 5062 u1 uas-invite.xml "$FAB_CONTACT" || { log "the SIPp UAS did not start"; case_ok=0; stop "$uas"; return; }
  sipp_run dialog-uac -sf "$HERE/scenarios/uac-invite.xml" -t t1 -i "$POOL_UA" -p 5065 \
    -key from sip:alice@contoso.test -key to sip:dan@fabrikam.test -key rr "partner=ip" -key mark no "$EDGE_INT:5060"
  local rc=$?
  wait_exit "$uas"
  local urc=$?
  stop "$uas"
  check dialog "SIPp (pool side, caller) completed INVITE/200/ACK/BYE/200 through the route set (sipp exit $rc)" [ "$rc" = 0 ]
  check dialog "SIPp (fabrikam side, callee) received the ACK and the caller's BYE and answered it (sipp exit $urc)" [ "$urc" = 0 ]
  check dialog "Kamailio Record-Routed by IP (the 200 the caller got names $KAM:5061;transport=tls)" \
    has_line "Record-Route: .*<sip:$(re "$KAM"):5061;transport=tls;r2=on;lr[;>]" "$tmp/dialog-uac.msg"
  check dialog "Kamailio received the BYE over TLS from the edge, verified, and followed its own IP Record-Route" \
    has_line "INTEROP request BYE sip:callee@$(re "$FAB_UA"):5062[^ ]* $TLS_FROM_EDGE route=<sip:$(re "$KAM"):5061;transport=tls;" "$tmp/kamailio.log"
  check dialog "Kamailio's loose_route took the BYE on to the callee" \
    has_line "INTEROP loose_route BYE to sip:callee@$(re "$FAB_UA"):5062" "$tmp/kamailio.log"
  plain_min=$((plain_min + 3))
  show_on_failure "$tmp/dialog-uac.out" "$tmp/dialog-uac.msg" "$tmp/dialog-uas.out" "$tmp/dialog-uas.msg" "$tmp/kamailio.log" "$(edge_log)"
}

# --- outproxy: a user agent that uses the edge as its outbound proxy --------------------
# Its MESSAGE carries a preloaded Route naming the edge's internal interface: the edge
# removes it and decides afresh, so the MESSAGE reaches fabrikam as without it.
case_outproxy() {
  local form route rc
  for form in fqdn ip; do
    route="sip:edge-int.contoso.test;lr"
    [ "$form" = ip ] && route="sip:$EDGE_INT:5060;transport=tcp;lr"
    sipp_run "outproxy-$form" -sf "$HERE/scenarios/uac-message-route.xml" -t t1 -i "$POOL_UA" -p 5064 \
      -key from sip:alice@contoso.test -key to sip:dan@fabrikam.test -key route "$route" "$EDGE_INT:5060"
    rc=$?
    check outproxy "Route <$route>: SIPp got Kamailio's 200 through the edge (sipp exit $rc)" [ "$rc" = 0 ]
    check outproxy "Route <$route>: Kamailio received the MESSAGE from the edge over verified TLS, without the preloaded Route" \
      has_line "INTEROP request MESSAGE sip:dan@fabrikam\.test $TLS_FROM_EDGE route=<null> .*ci=outproxy-$form-" "$tmp/kamailio.log"
    plain_min=$((plain_min + 1))
  done
  show_on_failure "$tmp/outproxy-fqdn.out" "$tmp/outproxy-fqdn.msg" "$tmp/outproxy-ip.out" "$tmp/outproxy-ip.msg" "$tmp/kamailio.log" "$(edge_log)"
}

# --- large: a MESSAGE larger than a TLS record (16 KiB) each way over mutual TLS ----------
case_large() {
  local body rc dir ends
  body="$(head -c 30000 /dev/zero | tr '\0' x)"
  for dir in in out; do
    # fabrikam's SIPp through Kamailio, or the pool's straight to the edge
    ends=(-t u1 -i "$FAB_UA" -p 5063 -key from sip:dan@fabrikam.test -key to sip:alice@contoso.test -key mark yes "$KAM:5060")
    [ "$dir" = out ] && ends=(-t t1 -i "$POOL_UA" -p 5064 -key from sip:alice@contoso.test -key to sip:dan@fabrikam.test -key mark no "$EDGE_INT:5060")
    sipp_run "large-$dir" -sf "$HERE/scenarios/uac-message.xml" -key body "$body" "${ends[@]}"
    rc=$?
    check large "a 30 000-byte MESSAGE, $dir: SIPp got its 200 through the edge (sipp exit $rc)" [ "$rc" = 0 ]
  done
  check large "in: Kamailio received the edge's 200 to it over verified TLS" \
    has_line "INTEROP reply 200 OK to MESSAGE $REPLY_FROM_EDGE .*ci=large-in-" "$tmp/kamailio.log"
  check large "out: Kamailio received it from the edge over verified TLS and its sanity_check() passed (Content-Length matches the body)" \
    has_line "INTEROP sanity passed MESSAGE ci=large-out-" "$tmp/kamailio.log"
  plain_min=$((plain_min + 2))
  show_on_failure "$tmp/large-in.out" "$tmp/large-out.out" "$tmp/kamailio.log" "$(edge_log)"
}

# --- Kamailio as the pool -------------------------------------------------------------
# sanity_ok NAME: every request Kamailio (pool) got from the edge in call NAME passed
# sanity_check(), and at least one did; says how many.
sanity_ok() {
  local n p f
  n=$(count "INTEROP pool request .* from $(re "$EDGE_INT"):[0-9]+ ci=$1-" "$tmp/kamailio-pool.log")
  p=$(count "INTEROP pool sanity passed .* ci=$1-" "$tmp/kamailio-pool.log")
  f=$(count "INTEROP pool sanity failed .* ci=$1-" "$tmp/kamailio-pool.log")
  sanity_note="$p of $n requests from the edge passed, $f failed"
  [ "$n" -ge 1 ] && [ "$n" = "$p" ] && [ "$f" = 0 ]
}

# call NAME DIRECTION PARTNER_RR POOL_RR ENDING: one INVITE between SIPp user agents.
# DIRECTION out (the pool's UA calls fabrikam's) or in; PARTNER_RR ip|fqdn (how Kamailio,
# sip.fabrikam.test, Record-Routes); POOL_RR yes (Kamailio as the pool Record-Routes: the
# pool's UA sends through it, and the edge's in-dialog requests reach the UA through it) or
# no (the pool's caller talks to the edge directly; the pool's callee gives a Contact at
# Kamailio (pool), which reaches it by Request-URI, as a registrar would: SIPp answers a
# request on its call's socket, not on a new connection the edge opened); ENDING
# caller|callee (who sends BYE), cancel (the caller cancels after the 180), reinvite
# (the caller sends a re-INVITE, an INFO, then BYE) or prack (a reliable 183 and its PRACK
# in the early dialog, then the caller's BYE).
call() {
  local name="$1" dir="$2" prr="$3" pool_rr="$4" ending="$5" uas rc urc
  local uac_sf=uac-invite.xml uas_sf=uas-invite.xml
  case "$ending" in
    callee) uac_sf=uac-invite-callee-bye.xml uas_sf=uas-invite-bye.xml ;;
    cancel) uac_sf=uac-invite-cancel.xml uas_sf=uas-invite-cancel.xml ;;
    reinvite) uac_sf=uac-invite-reinvite.xml uas_sf=uas-invite-reinvite.xml ;;
    prack) uac_sf=uac-invite-prack.xml uas_sf=uas-invite-prack.xml ;;
  esac
  local rr="partner=$prr;pool=$pool_rr" what="$dir $ending, partner RR by $prr, pool RR $pool_rr"
  if [ "$dir" = out ]; then
    local via_pool="$POOL_K:5070"
    [ "$pool_rr" = no ] && via_pool="$EDGE_INT:5060"
    sipp_uas uas "$name-uas" "$FAB_UA" 5062 u1 "$uas_sf" "$FAB_CONTACT" || { check "$name" "$what: the SIPp UAS started" false; stop "$uas"; return; }
    sipp_run "$name" -sf "$HERE/scenarios/$uac_sf" -t t1 -i "$POOL_UA" -p 5064 \
      -key from sip:alice@contoso.test -key to sip:dan@fabrikam.test -key rr "$rr" -key mark no "$via_pool"
  else
    sipp_uas uas "$name-uas" "$POOL_UA" 5066 t1 "$uas_sf" "$(pool_contact callee "$pool_rr")" || { check "$name" "$what: the SIPp UAS started" false; stop "$uas"; return; }
    sipp_run "$name" -sf "$HERE/scenarios/$uac_sf" -t u1 -i "$FAB_UA" -p 5063 \
      -key from sip:dan@fabrikam.test -key to sip:alice@contoso.test -key rr "$rr" -key mark yes "$KAM:5060"
  fi
  rc=$?
  wait_exit "$uas"
  urc=$?
  stop "$uas"
  check "$name" "$what: the caller's SIPp completed its scenario (exit $rc)" [ "$rc" = 0 ]
  check "$name" "$what: the callee's SIPp completed its scenario (exit $urc)" [ "$urc" = 0 ]
  local k="$(re "$KAM")" ours="$(re "$KAM"):5061;transport=tls"
  [ "$prr" = fqdn ] && ours="sip\.fabrikam\.test:5061;transport=tls"
  # The route the edge follows to Kamailio is Kamailio's TLS-side Record-Route entry.
  local toward_partner="route=<sip:$ours;r2=on;"
  case "$dir/$ending" in
    out/reinvite | out/prack)
      local m ms="INVITE INFO BYE"
      [ "$ending" = prack ] && ms="PRACK BYE"
      for m in $ms; do
        check "$name" "$what: Kamailio received the in-dialog $m from the edge over verified TLS along its own Record-Route" \
          has_line "INTEROP request $m sip:callee@$(re "$FAB_UA"):5062[^ ]* $TLS_FROM_EDGE $toward_partner.*ci=$name-" "$tmp/kamailio.log"
      done ;;
    in/reinvite | in/prack)
      local m ms="INVITE INFO BYE"
      [ "$ending" = prack ] && ms="PRACK BYE"
      for m in $ms; do
        check "$name" "$what: Kamailio took fabrikam's in-dialog $m to the edge and got the edge's 200 over verified TLS" \
          has_line "INTEROP reply 200 OK to $m $REPLY_FROM_EDGE .*ci=$name-" "$tmp/kamailio.log"
      done ;;
    out/caller)
      check "$name" "$what: Kamailio received the BYE from the edge over verified TLS along its own Record-Route" \
        has_line "INTEROP request BYE sip:callee@$(re "$FAB_UA"):5062[^ ]* $TLS_FROM_EDGE $toward_partner.*ci=$name-" "$tmp/kamailio.log" ;;
    out/callee)
      check "$name" "$what: Kamailio took the callee's BYE to the edge and got the edge's 200 over verified TLS" \
        has_line "INTEROP reply 200 OK to BYE $REPLY_FROM_EDGE .*ci=$name-" "$tmp/kamailio.log" ;;
    in/caller)
      check "$name" "$what: Kamailio took fabrikam's BYE to the edge and got the edge's 200 over verified TLS" \
        has_line "INTEROP reply 200 OK to BYE $REPLY_FROM_EDGE .*ci=$name-" "$tmp/kamailio.log" ;;
    in/callee)
      check "$name" "$what: Kamailio received the pool's BYE from the edge over verified TLS along its own Record-Route" \
        has_line "INTEROP request BYE sip:caller@$(re "$FAB_UA"):5063[^ ]* $TLS_FROM_EDGE $toward_partner.*ci=$name-" "$tmp/kamailio.log" ;;
    out/cancel)
      check "$name" "$what: Kamailio received the CANCEL from the edge over verified TLS" \
        has_line "INTEROP request CANCEL sip:dan@fabrikam\.test $TLS_FROM_EDGE .*ci=$name-" "$tmp/kamailio.log"
      check "$name" "$what: Kamailio relayed the callee's 487" \
        has_line "INTEROP reply 487 .* to INVITE from $(re "$FAB_UA"):5062 .*ci=$name-" "$tmp/kamailio.log" ;;
    in/cancel)
      check "$name" "$what: Kamailio got the 487 from the edge over verified TLS" \
        has_line "INTEROP reply 487 .* to INVITE $REPLY_FROM_EDGE .*ci=$name-" "$tmp/kamailio.log" ;;
  esac
  if [ "$ending" != cancel ]; then
    check "$name" "$what: Kamailio Record-Routed by $prr (the route set the fabrikam side got names sip:${ours//\\/})" \
      has_line "Record-Route: .*<sip:$ours;r2=on;[^>]*lr" "$tmp/$name$([ "$dir" = out ] && echo -uas).msg"
  fi
  # The edge sends Kamailio (pool) requests when the call comes in, or when the fabrikam
  # callee hangs up through a pool that Record-Routed.
  if [ "$dir" = in ] || [ "$pool_rr/$ending" = yes/callee ]; then
    check "$name" "$what: Kamailio (pool) ran sanity_check() on what the edge sent it" sanity_ok "$name"
    log "    ($sanity_note)"
  fi
  if [ "$pool_rr" = yes ] && [ "$ending" != cancel ]; then
    check "$name" "$what: the in-dialog requests crossed Kamailio (pool) along its own Record-Route" \
      has_line "INTEROP pool loose_route (BYE|ACK) .*ci=$name-" "$tmp/kamailio-pool.log"
  fi
  plain_min=$((plain_min + 1))
  show_on_failure "$tmp/$name.out" "$tmp/$name.msg" "$tmp/$name-uas.out" "$tmp/$name-uas.msg" "$tmp/kamailio.log" "$tmp/kamailio-pool.log" "$(edge_log)"
}

# pool_contact USER POOL_RR: the Contact of the pool's callee or notifier (port 5066):
# its own address, or Kamailio (pool)'s when the pool does not Record-Route.
pool_contact() {
  if [ "$2" = yes ]; then echo "sip:$1@$POOL_UA:5066;transport=tcp"; else echo "sip:$1@$POOL_K:5070;transport=tcp"; fi
}

# --- pool: Kamailio as the pool, sanity_check() on the edge's inbound MESSAGE and dialog --
case_pool() {
  sipp_run pool-message -sf "$HERE/scenarios/uac-message.xml" -t u1 -i "$FAB_UA" -p 5063 \
    -key from sip:dan@fabrikam.test -key to sip:alice@contoso.test -key mark yes -key body "interop message" "$KAM:5060"
  local rc=$?
  check pool "inbound MESSAGE: SIPp (fabrikam side) got Kamailio (pool)'s 200 through the edge (sipp exit $rc)" [ "$rc" = 0 ]
  check pool "inbound MESSAGE: Kamailio (pool) logged sanity_check() passed on the edge's MESSAGE" \
    has_line "INTEROP pool sanity passed MESSAGE ci=pool-message-" "$tmp/kamailio-pool.log"
  call pool-invite in ip yes caller
  local m
  for m in INVITE ACK BYE; do
    check pool "inbound INVITE dialog: Kamailio (pool) logged sanity_check() passed on the edge's $m" \
      has_line "INTEROP pool sanity passed $m ci=pool-invite-" "$tmp/kamailio-pool.log"
  done
  plain_min=$((plain_min + 1)) plain_methods+=" MESSAGE INVITE ACK BYE"
  show_on_failure "$tmp/pool-message.out" "$tmp/pool-message.msg" "$tmp/kamailio-pool.log" "$(edge_log)"
}

# --- calls: INVITE dialogs both ways, every Record-Route and hang-up combination --------
case_calls() {
  local dir prr pool_rr ending
  for dir in out in; do
    for prr in ip fqdn; do
      for pool_rr in no yes; do
        for ending in caller callee; do
          call "calls-$dir-$prr-$pool_rr-$ending" "$dir" "$prr" "$pool_rr" "$ending"
        done
      done
    done
    call "calls-$dir-ip-yes-cancel" "$dir" ip yes cancel
    call "calls-$dir-fqdn-no-cancel" "$dir" fqdn no cancel
    call "calls-$dir-ip-yes-reinvite" "$dir" ip yes reinvite
    call "calls-$dir-fqdn-no-reinvite" "$dir" fqdn no reinvite
    call "calls-$dir-ip-yes-prack" "$dir" ip yes prack
    call "calls-$dir-fqdn-no-prack" "$dir" fqdn no prack
  done
  plain_methods+=" INVITE ACK BYE CANCEL INFO PRACK"
}

# --- subscribe: SUBSCRIBE/NOTIFY dialogs both ways -------------------------------------
# subscription NAME DIRECTION PARTNER_RR POOL_RR: SUBSCRIBE from the pool's UA to fabrikam's
# (out) or back (in), the NOTIFY coming back along the route set.
subscription() {
  local name="$1" dir="$2" prr="$3" pool_rr="$4" uas rc urc
  local rr="partner=$prr;pool=$pool_rr" what="SUBSCRIBE $dir, partner RR by $prr, pool RR $pool_rr"
  if [ "$dir" = out ]; then
    local via_pool="$POOL_K:5070"
    [ "$pool_rr" = no ] && via_pool="$EDGE_INT:5060"
    sipp_uas uas "$name-uas" "$FAB_UA" 5062 u1 uas-subscribe.xml "sip:notifier@$FAB_UA:5062;transport=udp" || { check subscribe "$what: the SIPp notifier started" false; stop "$uas"; return; }
    sipp_run "$name" -sf "$HERE/scenarios/uac-subscribe.xml" -t t1 -i "$POOL_UA" -p 5064 \
      -key from sip:alice@contoso.test -key to sip:dan@fabrikam.test -key rr "$rr" -key mark no "$via_pool"
  else
    sipp_uas uas "$name-uas" "$POOL_UA" 5066 t1 uas-subscribe.xml "$(pool_contact notifier "$pool_rr")" || { check subscribe "$what: the SIPp notifier started" false; stop "$uas"; return; }
    sipp_run "$name" -sf "$HERE/scenarios/uac-subscribe.xml" -t u1 -i "$FAB_UA" -p 5063 \
      -key from sip:dan@fabrikam.test -key to sip:alice@contoso.test -key rr "$rr" -key mark yes "$KAM:5060"
  fi
  rc=$?
  wait_exit "$uas"
  urc=$?
  stop "$uas"
  check subscribe "$what: the subscriber's SIPp got the 200 and the NOTIFY (exit $rc)" [ "$rc" = 0 ]
  check subscribe "$what: the notifier's SIPp got the 200 to its NOTIFY (exit $urc)" [ "$urc" = 0 ]
  if [ "$dir" = out ]; then
    check subscribe "$what: Kamailio received the SUBSCRIBE from the edge over verified TLS" \
      has_line "INTEROP request SUBSCRIBE sip:dan@fabrikam\.test $TLS_FROM_EDGE .*ci=$name-" "$tmp/kamailio.log"
    check subscribe "$what: Kamailio took the NOTIFY to the edge and got the edge's 200 over verified TLS" \
      has_line "INTEROP reply 200 OK to NOTIFY $REPLY_FROM_EDGE .*ci=$name-" "$tmp/kamailio.log"
  else
    check subscribe "$what: Kamailio got the edge's 200 to the SUBSCRIBE over verified TLS" \
      has_line "INTEROP reply 200 OK to SUBSCRIBE $REPLY_FROM_EDGE .*ci=$name-" "$tmp/kamailio.log"
    check subscribe "$what: Kamailio received the pool's NOTIFY from the edge over verified TLS" \
      has_line "INTEROP request NOTIFY sip:subscriber@$(re "$FAB_UA"):5063[^ ]* $TLS_FROM_EDGE .*ci=$name-" "$tmp/kamailio.log"
    check subscribe "$what: Kamailio (pool) ran sanity_check() on what the edge sent it" sanity_ok "$name"
    log "    ($sanity_note)"
  fi
  plain_min=$((plain_min + 1))
  show_on_failure "$tmp/$name.out" "$tmp/$name.msg" "$tmp/$name-uas.out" "$tmp/$name-uas.msg" "$tmp/kamailio.log" "$tmp/kamailio-pool.log" "$(edge_log)"
}
case_subscribe() {
  subscription subscribe-out-ip out ip no
  subscription subscribe-out-fqdn out fqdn yes
  subscription subscribe-in-ip in ip yes
  subscription subscribe-in-fqdn in fqdn no
  plain_methods+=" SUBSCRIBE NOTIFY"
}

# --- dissect: what the edge emitted on the plain-text legs parses in tshark -------------
# The capture runs during the other cases (started before them when this case is asked
# for): everything the edge sent from its internal address over TCP (its responses to the
# pool's user agents and to Kamailio as the pool, its requests to either pool and to the
# pool's user agents), plus the marker below.
PLAIN_FILTER="tcp and (src host $EDGE_INT or (dst host $POOL and dst port 5070))"
start_capture() {
  need_pkg dumpcap tshark
  need_pkg tshark tshark
  start capture "$tmp/dumpcap.log" dumpcap -i lo -f "$PLAIN_FILTER" -w "$tmp/plain.pcapng"
  wait_log "$tmp/dumpcap.log" "^File: " >/dev/null || { cat "$tmp/dumpcap.log" >&2; die "dumpcap did not start"; }
}
case_dissect() {
  [ -n "${capture:-}" ] || { log "no capture (the dissect case runs after the others)"; case_ok=0; return; }
  # dumpcap drops what the kernel has not handed it yet when stopped: a marker connection
  # to the sink's port, from outside the edge, comes after everything the cases sent, so
  # once the file holds it, it holds all of that (bounded wait).
  local d=(-r "$tmp/plain.pcapng" -d tcp.port==5070,sip -d tcp.port==5060,sip -d tcp.port==5064,sip -d tcp.port==5066,sip) i
  (exec 3<>"/dev/tcp/$POOL/5070") 2>/dev/null
  local marker="tcp.dstport==5070 and tcp.flags.syn==1 and tcp.flags.ack==0 and ip.src!=$EDGE_INT"
  for ((i = 0; i < WAIT_TRIES; i++)); do
    tshark -r "$tmp/plain.pcapng" -Y "$marker" 2>/dev/null | grep -q . && break
    sleep 0.1
  done
  stop "$capture"
  check dissect "the capture holds everything up to the marker" [ "$i" -lt "$WAIT_TRIES" ]
  local n bad rc1 rc2 reqs
  tshark "${d[@]}" -Y sip -T fields -e frame.number -e sip.Status-Line -e sip.Request-Line >"$tmp/dissect.txt" 2>"$tmp/dissect.err"
  rc1=$?
  tshark "${d[@]}" -Y '_ws.malformed or _ws.expert.severity >= error' >"$tmp/malformed.txt" 2>>"$tmp/dissect.err"
  rc2=$?
  n="$(grep -c . "$tmp/dissect.txt")"
  bad="$(grep -c . "$tmp/malformed.txt")"
  reqs="$(cut -f3 "$tmp/dissect.txt" | awk 'NF{print $1}' | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}')"
  check dissect "tshark ran (exit $rc1, $rc2)" [ "$rc1" = 0 -a "$rc2" = 0 ]
  check dissect "tshark decoded the edge's SIP on the plain-text legs ($n messages, at least $plain_min expected; requests: ${reqs:-none})" [ "$n" -ge "$plain_min" -a "$n" -gt 0 ]
  local m
  for m in $(printf '%s\n' $plain_methods | sort -u); do
    check dissect "tshark decoded the edge's $m requests on the plain-text legs" \
      has_line "^[0-9]+"$'\t'"[^"$'\t'"]*"$'\t'"$m " "$tmp/dissect.txt"
  done
  check dissect "tshark flagged none of the captured frames malformed or in error ($bad frames)" [ "$bad" = 0 ]
  show_on_failure "$tmp/dissect.txt" "$tmp/malformed.txt" "$tmp/dissect.err"
}

cases=("$@")
[ ${#cases[@]} = 0 ] && cases=("${ALL_CASES[@]}")
# The cases run in the suite's order (the sink ones before the edge restarts with Kamailio
# as its pool); dissect inspects what the others sent: it goes last, with the capture
# started first, and alone it runs them all.
ordered=() want_dissect=0
for c in "${ALL_CASES[@]}"; do
  [[ " ${cases[*]} " == *" $c "* ]] || continue
  if [ "$c" = dissect ]; then want_dissect=1; else ordered+=("$c"); fi
done
if [ "$want_dissect" = 1 ]; then
  [ ${#ordered[@]} = 0 ] && ordered=("${ALL_CASES[@]:0:${#ALL_CASES[@]}-1}")
  ordered+=(dissect)
  start_capture
fi
cases=("${ordered[@]}")
t0=$SECONDS
for c in "${cases[@]}"; do
  if [ "$c" != dissect ]; then
    if [[ "$KAMPOOL_CASES" == *" $c "* ]]; then use_pool kamailio; else use_pool sink; fi
  fi
  log "case $c"
  case_ok=1
  "case_$c"
  if [ "$case_ok" = 1 ]; then passed+=("$c"); else failed+=("$c"); fi
done
for p in edge sink kam kam_pool; do
  [ -n "${!p}" ] || continue
  kill -0 "${!p}" 2>/dev/null || { log "FAILED: $p exited during the suite"; failed+=("$p-alive"); }
done
# Both Kamailio run sanity_check() on every request the edge sends them (the partner over
# TLS, the pool over TCP): none may have failed, whatever the case.
n_failed=$(count "INTEROP sanity failed" "$tmp/kamailio.log")
n_passed=$(count "INTEROP sanity passed" "$tmp/kamailio.log")
log "Kamailio (sip.fabrikam.test): sanity_check() passed on $n_passed requests over TLS, failed on $n_failed"
[ "$n_failed" = 0 ] || { grep "INTEROP sanity failed" "$tmp/kamailio.log" >&2; failed+=("partner-sanity"); }
if [ -n "$kam_pool" ]; then
  n_failed=$(count "INTEROP pool sanity failed" "$tmp/kamailio-pool.log")
  n_passed=$(count "INTEROP pool sanity passed" "$tmp/kamailio-pool.log")
  log "Kamailio (pool): sanity_check() passed on $n_passed requests from the edge, failed on $n_failed"
  [ "$n_failed" = 0 ] || { grep "INTEROP pool sanity failed" "$tmp/kamailio-pool.log" >&2; failed+=("pool-sanity"); }
fi
log "passed: ${passed[*]:-none}; failed: ${failed[*]:-none}; $((SECONDS - t0)) s"
[ ${#failed[@]} = 0 ]
