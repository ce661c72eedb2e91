#!/bin/bash
# The dictionary's effect, measured: per target, one fuzzer at a time under nice -n 19,
# 5 min without sip.dict and 5 min with it (each from a fresh copy of the committed corpus,
# so both start from the same coverage), then 10 min more with it on the dictionary run's
# corpus. Logs and start/end times land in corpus-work/logs/ (ignored by git).
set -u
cd "$(dirname "$0")"
L=corpus-work/logs
mkdir -p $L
run() { # target corpus-dir seconds log-name [libFuzzer flags...]
  local t=$1 dir=$2 secs=$3 log=$4
  shift 4
  echo "$(date -u +%FT%TZ) start $log" >> $L/times
  RUSTC_BOOTSTRAP=1 nice -n 19 cargo fuzz run -s none "$t" "$dir" -- \
    "$@" -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    > "$L/$log.log" 2>&1
  echo "$(date -u +%FT%TZ) end $log rc=$?" >> $L/times
}
for t in framing roundtrip decide; do
  rm -rf "corpus-work/$t-nodict" "corpus-work/$t"
  mkdir -p "corpus-work/$t-nodict" "corpus-work/$t"
  cp corpus/$t/* "corpus-work/$t-nodict/"
  cp corpus/$t/* "corpus-work/$t/"
  run "$t" "corpus-work/$t-nodict" 300 "$t-nodict-300"
  run "$t" "corpus-work/$t" 300 "$t-dict-300" -dict=sip.dict
  run "$t" "corpus-work/$t" 600 "$t-dict-600" -dict=sip.dict
done
echo "$(date -u +%FT%TZ) all done" >> $L/times
