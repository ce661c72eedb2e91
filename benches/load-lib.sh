# Shared by compare-load.sh and load-ceiling.sh: the `sipedge load` search for the highest
# rate that holds, and process handling. Source it; it expects $SIPEDGE (the binary).

SIPEDGE="${SIPEDGE:-target/release/sipedge}"

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
die() { echo "error: $*" >&2; exit 2; }

# pid_tree PID: the PID and all its descendants.
pid_tree() {
  local p c
  for p in "$@"; do
    echo "$p"
    for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do pid_tree "$c"; done
  done
}

# cpu_ticks PID...: user+system clock ticks of those still alive.
cpu_ticks() {
  local p sum=0 f a
  for p in "$@"; do
    f="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
    f="${f##*) }"
    read -r -a a <<<"$f"
    sum=$((sum + a[11] + a[12]))
  done
  echo "$sum"
}

# stop_pid PID: TERM, wait up to 5 s, then KILL.
stop_pid() {
  local p="$1" i
  [ -n "$p" ] || return 0
  kill -TERM "$p" 2>/dev/null || return 0
  for i in $(seq 50); do kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null; return 0; }; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null
}

# stop_tracked: stops every PID in the array `pids` (KILL to its descendants, then
# stop_pid), for an EXIT trap.
stop_tracked() {
  local p c
  for p in "${pids[@]}"; do
    for c in $(pid_tree "$p" | tail -n +2); do kill -KILL "$c" 2>/dev/null; done
    stop_pid "$p"
  done
}

# port_free PORT: nothing listens on 127.0.0.1:PORT (tcp or udp).
port_free() { ! ss -H -ltun "src 127.0.0.1:$1" 2>/dev/null | grep -q .; }

# wait_port PORT: until something listens on 127.0.0.1:PORT (10 s at most).
wait_port() {
  local i
  for i in $(seq 100); do port_free "$1" || return 0; sleep 0.1; done
  return 1
}

# field LINE KEY: the value of KEY=... in a RESULT line.
field() { sed -nE "s/.*[ ^]$2=([^ ]*).*/\1/p" <<<" $1"; }

# one_step TARGET TRANSPORT RATE DURATION WATCH_PID [load args...]: one fixed-rate run;
# prints its RESULT line with cpu_proxy_pct appended (0 without a PID to watch).
one_step() {
  local target="$1" transport="$2" rate="$3" duration="$4" watch="$5"; shift 5
  local tree=() t0 t1 c0 c1 line hz
  hz="$(getconf CLK_TCK)"
  [ -n "$watch" ] && mapfile -t tree < <(pid_tree "$watch")
  c0="$(cpu_ticks "${tree[@]}")"; t0="$(date +%s.%N)"
  line="$("$SIPEDGE" load --quiet --target "$target" --transport "$transport" --rate "$rate" \
            --duration "$duration" "$@" 2>&1 >/dev/null | grep '^RESULT' | tail -n 1)"
  c1="$(cpu_ticks "${tree[@]}")"; t1="$(date +%s.%N)"
  [ -n "$line" ] || line="RESULT broken=1 sent=0 ok=0 failed=1"
  local cpu
  cpu="$(awk -v c="$((c1 - c0))" -v hz="$hz" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", c * 100 / hz / (b - a) }')"
  echo "$line cpu_proxy_pct=$cpu"
}

# holds LINE RATE: zero failures, every request answered, no retransmission, the rate
# achieved within 5 %, p99 at most 100 ms (the shared harness's criteria).
holds() {
  local l="$1" rate="$2"
  [ "$(field "$l" failed)" = 0 ] && [ "$(field "$l" sent)" = "$(field "$l" ok)" ] \
    && [ "$(field "$l" retrans)" = 0 ] \
    && awk -v a="$(field "$l" achieved_mps)" -v r="$rate" -v p="$(field "$l" p99_ms)" \
         'BEGIN { exit !(a >= 0.95 * r && p <= 100) }'
}

# find_max NAME TARGET TRANSPORT WATCH_PID [load args...]: doubles from $START while a
# step holds, then bisects to within 10 %, within $BUDGET seconds; prints one LOADMAX line.
find_max() {
  local name="$1" target="$2" transport="$3" watch="$4"; shift 4
  local began good=0 bad=0 rate="$START" best="" line
  began="$(date +%s)"
  while :; do
    [ $(( $(date +%s) - began + STEP )) -le "$BUDGET" ] || break
    line="$(one_step "$target" "$transport" "$rate" "$STEP" "$watch" "$@")"
    log "$name $transport rate=$rate: $line"
    if holds "$line" "$rate"; then good="$rate"; best="$line"; else bad="$rate"; fi
    if [ "$bad" = 0 ]; then rate=$((rate * 2)); continue; fi
    [ "$good" != 0 ] || { [ "$bad" -le 100 ] && break; rate=$((bad / 2)); continue; }
    # Stop once the gap is within 10 % of the good rate.
    [ $((bad - good)) -gt $((good / 10)) ] || break
    rate=$(((good + bad) / 2))
  done
  if [ -z "$best" ]; then
    echo "LOADMAX proxy=$name transport=$transport mps=0 rate_target=0 p50_ms=- p99_ms=- cpu_proxy_pct=- search_s=$(( $(date +%s) - began ))"
    return
  fi
  echo "LOADMAX proxy=$name transport=$transport mps=$(field "$best" achieved_mps) rate_target=$good p50_ms=$(field "$best" p50_ms) p99_ms=$(field "$best" p99_ms) cpu_proxy_pct=$(field "$best" cpu_proxy_pct) search_s=$(( $(date +%s) - began ))"
}

# parse_args "DEFAULT TRANSPORTS" "$@": --budget S, --step S, --start RATE, --connections
# C and transports into BUDGET, STEP, START, CONNECTIONS (defaults set by the caller) and
# the array `transports`; checks that the release binary is there.
parse_args() {
  local default="$1"; shift
  transports=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --budget) BUDGET="$2"; shift 2 ;;
      --step) STEP="$2"; shift 2 ;;
      --start) START="$2"; shift 2 ;;
      --connections) CONNECTIONS="$2"; shift 2 ;;
      udp|tcp|tls) transports+=("$1"); shift ;;
      *) die "unknown argument $1 (see the header of $0)" ;;
    esac
  done
  [ ${#transports[@]} -gt 0 ] || read -r -a transports <<<"$default"
  [ -x "$SIPEDGE" ] || die "$SIPEDGE missing: cargo build --release"
}
