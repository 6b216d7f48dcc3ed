#!/usr/bin/env bash
# Fuzzes the frame decoder and the decoding of every message and method (Fuzz/Harness.swift) with libFuzzer.
#   scripts/fuzz.sh [RUNS] [--release]   build (if stale) and run RUNS inputs (default 200,000); crashes, leaks and
#                                        timeouts are saved under .data/fuzz/artifacts/ and fail the run
#   scripts/fuzz.sh --seeds              regenerate the committed seed corpus Fuzz/corpus/ from real messages
# The corpus libFuzzer grows is kept in .data/fuzz/corpus/ (ignored) and reused by the next run.
# Last line: FUZZ inputs=N crashes=N leaks=N timeouts=N out_of_memory=N (crashes counts every failing input: crash,
# leak, timeout and out-of-memory).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUNS=200000
CONFIG=debug
SEEDS_ONLY=0
for arg in "$@"; do
  case $arg in
    --release) CONFIG=release ;;
    --seeds) SEEDS_ONLY=1 ;;
    ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [RUNS] [--release] | --seeds" >&2; exit 2 ;;
    *) RUNS=$arg ;;
  esac
done

bash Fuzz/build.sh "$CONFIG"
BIN=.data/fuzz/$CONFIG/flashsale-fuzz

if [[ $SEEDS_ONLY == 1 ]]; then
  rm -rf Fuzz/corpus && mkdir -p Fuzz/corpus
  FLASHSALE_FUZZ_WRITE_SEEDS=Fuzz/corpus "$BIN"
  exit 0
fi

WORK=.data/fuzz/corpus
ARTIFACTS=.data/fuzz/artifacts/$(date +%Y%m%d-%H%M%S)-$$
JOBS=${FUZZ_JOBS:-1}   # parallel fuzzing processes sharing the corpus, RUNS/JOBS inputs each (2 cores here: 1 or 2)
mkdir -p "$WORK" "$ARTIFACTS"
echo "fuzzing: $RUNS inputs in $JOBS process(es), seeds Fuzz/corpus ($(ls Fuzz/corpus | wc -l) files), corpus $WORK ($(ls "$WORK" | wc -l) files)" >&2
pids=()
for job in $(seq "$JOBS"); do
  runs=$((RUNS / JOBS + (job <= RUNS % JOBS ? 1 : 0)))
  # -detect_leaks=1: LeakSanitizer after every input that allocated more than it freed, and at exit.
  # -max_len: past the 64 KiB frame limit the decoder refuses the header alone; longer inputs only cost time.
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 "$BIN" -runs="$runs" -max_len=4096 -timeout=10 \
    -rss_limit_mb=2048 -detect_leaks=1 -print_final_stats=1 -seed="$((RANDOM * 32768 + RANDOM + job))" \
    -artifact_prefix="$ARTIFACTS/" "$WORK" Fuzz/corpus >"$ARTIFACTS.job$job.log" 2>&1 &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done

inputs=0
for job in $(seq "$JOBS"); do
  log=$ARTIFACTS.job$job.log
  done_runs=$(grep -oE '^Done [0-9]+ runs' "$log" | awk '{print $2}' || true)
  [[ -n $done_runs ]] || done_runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
  inputs=$((inputs + done_runs))
  grep -E '^(Done |stat::(average_exec_per_sec|new_units_added|peak_rss_mb))' "$log" | sed "s/^/job $job: /" >&2 || true
done
crashes=$(find "$ARTIFACTS" -type f | wc -l)
if [[ $failed != 0 && $crashes == 0 ]]; then crashes=$failed; fi   # died without saving an input: count it, show the log
if [[ $crashes != 0 ]]; then
  grep -hE 'ERROR: |SUMMARY: |Fatal error|crashed|deadly signal|Test unit written' "$ARTIFACTS".job*.log | head -20 >&2 || true
  echo "fuzz: $crashes failing input(s) in $ARTIFACTS (logs: $ARTIFACTS.job*.log); reproduce: $BIN FILE" >&2
else
  rmdir "$ARTIFACTS" 2>/dev/null || true
  rm -f "$ARTIFACTS".job*.log
fi
count() { find "$ARTIFACTS" -type f -name "$1-*" 2>/dev/null | wc -l; }
echo "FUZZ inputs=$inputs crashes=$crashes leaks=$(count leak) timeouts=$(count timeout) out_of_memory=$(count oom)"
[[ $crashes == 0 ]]
