#!/usr/bin/env bash
# The fuzzer at full size: 10 million inputs (or the count given) over the frame decoder and the decoding of every
# message and method (Fuzz/Harness.swift), with AddressSanitizer and LeakSanitizer, against NIOCore built in release.
# Both cores by default (FUZZ_JOBS=1 for one). Ends with `RESULT inputs=N crashes=N`.
#   scripts/bench.sh fuzz [inputs]
source "$(dirname "$0")/common.sh"
INPUTS=${1:-10000000}
bash scripts/install-deps.sh >/dev/null
echo "building release NIOCore..." >&2
swift build -c release --target Proto >&2
started=$(date +%s)
status=0
out=$(FUZZ_JOBS=${FUZZ_JOBS:-2} bash scripts/fuzz.sh "$INPUTS" --release) || status=$?
elapsed=$(( $(date +%s) - started ))
summary=$(grep '^FUZZ ' <<<"$out" | tail -1)
inputs=$(field "$summary" inputs)
crashes=$(field "$summary" crashes)
echo
echo "fuzz: ${inputs:-0} inputs in ${elapsed} s ($(( ${inputs:-0} / (elapsed > 0 ? elapsed : 1) )) inputs/s), crashes, leaks and timeouts: ${crashes:-?}"
echo "corpus: $(ls .data/fuzz/corpus | wc -l) inputs in .data/fuzz/corpus (seeds: Fuzz/corpus)"
echo "RESULT inputs=${inputs:-0} crashes=${crashes:-1}"
exit "$status"
