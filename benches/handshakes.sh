#!/usr/bin/env bash
# Mutual-TLS handshakes per second, sipedge beside Kamailio, driven by the same client
# (the idle_tls bench) with the same certificates, TLS version and cipher suite; then, with
# --idle N, N idle mutual-TLS connections held by each and the memory of its process tree.
#
#   benches/handshakes.sh [--handshakes N] [--concurrency "1 4 16"] [--idle N]
#                         [--proxies "sipedge kamailio"] [--no-shim] [--kamailio-malloc fm]
#                         [--kamailio-tcp-children 4]
#
# --handshakes: handshakes per measurement (default 2000); --concurrency: one measurement
# per value, handshakes in flight at once (default "1 4 16": 1 is sequential); --idle:
# connections to hold afterwards (default 0: skip; 10000 for the issue's target);
# --no-shim: run Kamailio without benches/kamailio/fork_tls_reset.so, to see the crash it
# prevents; --kamailio-malloc: Kamailio's memory manager (-x; default fm: its default qm,
# a debugging allocator, made handshakes 4x slower here, OpenSSL 3 allocating in shared
# memory through it); --kamailio-tcp-children: its TLS worker processes (default 4, as in
# the shared harness; with 1 the shim is not needed, a single worker sharing nothing).
# sipedge runs `target/release/sipedge run --config config/bench-tls.toml`
# (external TLS on 127.0.0.1:5061), Kamailio benches/kamailio/kamailio.cfg (TLS on
# 127.0.0.1:5091), one after the other; each is stopped by PID. A handshake counts once the
# proxy has answered a CRLFCRLF keep-alive over the new connection.
#
# Output, per proxy and concurrency:
#   HS proxy=.. concurrency=.. done=.. failed=.. handshakes_per_s=.. cpu_pct=.. \
#      handshakes_per_cpu_s=.. tls=.. suite=.. kx=..
# then per concurrency `COMPARE concurrency=.. sipedge=.. kamailio=.. ratio=.. per_cpu_s:
# sipedge=.. kamailio=.. ratio=.. same_tls_parameters=yes|no` (handshakes per second of
# wall time, then per second of the proxy's CPU, which the shared machine disturbs less),
# and with
# --idle the IDLE line of each (see benches/idle_tls.rs). If Kamailio crashes (a worker
# killed by a signal, or its allocator reporting a corrupted block), the script prints
# CRASHED with the tail of its log instead of a number. Exit 0 when every measurement
# completed, 1 when a proxy crashed or a measurement failed, 2 on a setup error.
# Run from the repository after `cargo build --release`; the bench binary is built here.
set -u
cd "$(dirname "$0")/.."
. benches/load-lib.sh

handshakes=2000 concurrency="1 4 16" idle=0 proxies="sipedge kamailio" shim=1 malloc=fm tcp_children=4
while [ $# -gt 0 ]; do
  case "$1" in
    --handshakes) handshakes="$2"; shift 2 ;;
    --concurrency) concurrency="$2"; shift 2 ;;
    --idle) idle="$2"; shift 2 ;;
    --proxies) proxies="$2"; shift 2 ;;
    --no-shim) shim=0; shift ;;
    --kamailio-malloc) malloc="$2"; shift 2 ;;
    --kamailio-tcp-children) tcp_children="$2"; shift 2 ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
done
for n in "$handshakes" "$idle" "$tcp_children"; do
  [[ "$n" =~ ^[0-9]+$ ]] || die "numeric argument expected, got '$n'"
done
[ -x "$SIPEDGE" ] || die "$SIPEDGE missing: cargo build --release"
command -v kamailio >/dev/null \
  || { apt-get install -y -qq kamailio kamailio-tls-modules >/dev/null 2>&1 || die "kamailio is not installed"; }
command -v cc >/dev/null || die "a C compiler (cc) is needed for the Kamailio shim"

bench="$(cargo bench --bench idle_tls --no-run 2>&1 | sed -nE 's/.*Executable .*\((.*)\).*/\1/p' | tail -n 1)"
[ -x "$bench" ] || die "could not build the idle_tls bench (cargo bench --bench idle_tls --no-run)"

tmp="$(mktemp -d)"
pids=()
trap 'stop_tracked; rm -rf "$tmp"' EXIT
trap 'exit 2' INT TERM
# A crashed Kamailio worker would otherwise leave a ~300 MB core file per crash.
ulimit -c 0

cc -shared -fPIC -O2 -o "$tmp/fork_tls_reset.so" benches/kamailio/fork_tls_reset.c \
  || die "could not build benches/kamailio/fork_tls_reset.c"
sed -e "s|@CERTS@|$PWD/certs|g" benches/kamailio/tls.cfg >"$tmp/tls.cfg"
sed -e "s|@TLS_CFG@|$tmp/tls.cfg|; s|@PORT@|5091|; s|@TCP_CHILDREN@|$tcp_children|" benches/kamailio/kamailio.cfg >"$tmp/kamailio.cfg"
kamailio -c -f "$tmp/kamailio.cfg" >"$tmp/check.log" 2>&1 \
  || { tail -n 20 "$tmp/check.log" >&2; die "benches/kamailio/kamailio.cfg does not check"; }
mkdir -p "$tmp/run"

# start_proxy NAME: starts it in the background, sets $proxy_pid and $target.
start_proxy() {
  local port
  case "$1" in
    sipedge)
      port=5061
      port_free "$port" || die "127.0.0.1:$port is already in use"
      "$SIPEDGE" run --config config/bench-tls.toml >"$tmp/sipedge.log" 2>&1 &
      ;;
    kamailio)
      port=5091
      port_free "$port" || die "127.0.0.1:$port is already in use"
      local preload=""
      [ "$shim" = 1 ] && preload="$tmp/fork_tls_reset.so"
      # 2 GB shared memory: every TLS connection keeps ~80 KB of OpenSSL state there.
      LD_PRELOAD="$preload" kamailio -f "$tmp/kamailio.cfg" -DD -E -m 2048 -M 16 -x "$malloc" \
        -Y "$tmp/run" >"$tmp/kamailio.log" 2>&1 &
      ;;
    *) die "unknown proxy $1 (sipedge or kamailio)" ;;
  esac
  proxy_pid=$!
  pids+=("$proxy_pid")
  target="127.0.0.1:$port"
  wait_port "$port" || { tail -n 20 "$tmp/$1.log" >&2; die "$1 did not listen on $target"; }
  sleep 0.5   # let Kamailio's workers come up
  log "$1 pid $proxy_pid on $target ($(pid_tree "$proxy_pid" | wc -l) processes)"
}

# stop_proxy: TERM to the proxy (Kamailio's main process stops its workers), then KILL to
# any of its processes still there, listed before they could be reparented.
stop_proxy() {
  local tree c keep=() p
  mapfile -t tree < <(pid_tree "$proxy_pid")
  stop_pid "$proxy_pid"
  for c in "${tree[@]:1}"; do kill -KILL "$c" 2>/dev/null; done
  for p in "${pids[@]}"; do [ "$p" = "$proxy_pid" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# crashed NAME: true (and prints CRASHED with the log tail) when the proxy died or, for
# Kamailio, when a worker was killed by a signal or its allocator saw a corrupted block.
crashed() {
  local why=""
  kill -0 "$proxy_pid" 2>/dev/null || why="exited"
  if [ "$1" = kamailio ] && grep -qE 'exited by a signal|BUG: ' "$tmp/kamailio.log"; then
    why="${why:+$why, }worker crash in log"
  fi
  [ -n "$why" ] || return 1
  echo "CRASHED proxy=$1 ($why); first crash lines, then the last lines of its log:"
  grep -E 'exited by a signal|BUG: |CRITICAL' "$tmp/$1.log" | head -n 5 | sed 's/^/  ! /'
  grep -vE '^\s*$' "$tmp/$1.log" | tail -n 10 | sed 's/^/  | /'
  return 0
}

declare -A rate per neg
status=0
hz="$(getconf CLK_TCK)"
for p in $proxies; do
  start_proxy "$p"
  for c in $concurrency; do
    mapfile -t tree < <(pid_tree "$proxy_pid")
    c0="$(cpu_ticks "${tree[@]}")"
    line="$("$bench" --handshakes "$handshakes" --concurrency "$c" --target "$target" \
              --pid "$proxy_pid" 2>"$tmp/client.err" | grep '^HANDSHAKES')"
    c1="$(cpu_ticks "${tree[@]}")"
    if crashed "$p"; then status=1; break; fi
    if [ -z "$line" ]; then
      echo "FAILED proxy=$p concurrency=$c: $(tail -n 3 "$tmp/client.err")"; status=1; continue
    fi
    done_n="$(field "$line" done)" hs="$(field "$line" handshakes_per_s)"
    [ "$done_n" = "$handshakes" ] || status=1
    # CPU over the client's measured seconds (the proxy is idle while the client starts).
    cpu="$(awk -v c="$((c1 - c0))" -v hz="$hz" -v s="$(field "$line" seconds)" 'BEGIN { printf "%.0f", c * 100 / hz / s }')"
    per_cpu="$(awk -v n="$done_n" -v c="$((c1 - c0))" -v hz="$hz" 'BEGIN { if (c > 0) printf "%.0f", n * hz / c; else print "-" }')"
    echo "HS proxy=$p concurrency=$c done=$done_n failed=$(field "$line" failed) handshakes_per_s=$hs cpu_pct=$cpu handshakes_per_cpu_s=$per_cpu ${line#*handshakes_per_s=* }"
    [ "$done_n" = "$handshakes" ] && { rate[$p,$c]="$hs"; per[$p,$c]="$per_cpu"; }
    neg[$p,$c]="${line#*handshakes_per_s=* }"
  done
  if [ "$idle" -gt 0 ] && kill -0 "$proxy_pid" 2>/dev/null && ! crashed "$p" >/dev/null; then
    line="$("$bench" --connections "$idle" --concurrency 16 --target "$target" --pid "$proxy_pid" \
              2>"$tmp/client.err" | grep '^IDLE')"
    if crashed "$p"; then status=1
    elif [ -z "$line" ]; then echo "FAILED proxy=$p idle: $(tail -n 3 "$tmp/client.err")"; status=1
    else echo "IDLE proxy=$p ${line#IDLE }"
    fi
  fi
  stop_proxy
done

for c in $concurrency; do
  s="${rate[sipedge,$c]:-}" k="${rate[kamailio,$c]:-}"
  [ -n "$s" ] && [ -n "$k" ] || continue
  same=yes; [ "${neg[sipedge,$c]}" = "${neg[kamailio,$c]}" ] || { same=no; status=1; }
  echo "COMPARE concurrency=$c sipedge=$s kamailio=$k ratio=$(awk -v s="$s" -v k="$k" 'BEGIN { printf "%.2f", s / k }')" \
       "per_cpu_s: sipedge=${per[sipedge,$c]} kamailio=${per[kamailio,$c]}" \
       "ratio=$(awk -v s="${per[sipedge,$c]}" -v k="${per[kamailio,$c]}" 'BEGIN { if (k > 0) printf "%.2f", s / k; else print "-" }')" \
       "same_tls_parameters=$same"
done
exit "$status"
