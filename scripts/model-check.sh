#!/usr/bin/env bash
# Checks the quota and in-doubt protocol model (Sources/QuotaCore/Planning/QuotaProtocol.pml) with spin,
# exhaustively: the protocol as built must hold both properties in every state, every run must end (no cycle), and
# each old behaviour switched back on must give a counterexample.
#   scripts/model-check.sh                 every case at the default (test) sizes
#   scripts/model-check.sh CASE...         only these cases (fixed, terminates, or a bug name, e.g. BUG_REVIVE)
#   scripts/model-check.sh --large [CASE...]   larger sizes (2 units, 2 attempts per buyer): ~10 M states, ~2 min
#   scripts/model-check.sh --edges 3 [CASE...] 3 edge addresses (4 edge ids): ~1.6 M states
#   scripts/model-check.sh --list          the case names
# Prints pan's own summary for each case, the counterexample of each bug case (what happened, step by step), one
# `MODEL case=... expected=... got=... states=... seconds=...` line per case, and last
# `RESULT cases=N failed=N states=N seconds=S`. Exit status 0 when every case gave what it should.
# Work files (pan.c, pan, trails) go to .data/model-check/<case>/.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=Sources/QuotaCore/Planning/QuotaProtocol.pml
BUGS=(BUG_LEAK_SECOND_INDOUBT BUG_MADE_HERE_BY_EDGE_ID BUG_NONFENCING_LOOKUP BUG_NO_PARTITION_FENCE
      BUG_RELEASE_BY_ADDRESS BUG_REVIVE BUG_LATE_COMMIT)
ALL=(fixed terminates "${BUGS[@]}")

sizes=()
hash=-w21        # 2^21 slots: the default sizes store about half a million states
memory=(-DMEMLIM=1024)
cases=()
while [[ $# -gt 0 ]]; do
    arg=$1; shift
    case "$arg" in
        --edges) sizes+=(-DEDGES="$1"); shift; hash=-w24; memory=(-DMEMLIM=3072 -DCOLLAPSE) ;;
        --large) sizes+=(-DSTOCK=2 -DATTEMPTS=2); hash=-w24; memory=(-DMEMLIM=3072 -DCOLLAPSE) ;;
        --list) printf '%s\n' "${ALL[@]}"; exit 0 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) cases+=("$arg") ;;
    esac
done
[[ ${#cases[@]} -gt 0 ]] || cases=("${ALL[@]}")

for tool in spin gcc; do
    command -v "$tool" >/dev/null || { echo "model-check.sh: $tool is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
done

failed=0
total_states=0
started=$SECONDS
for name in "${cases[@]}"; do
    # What each case compiles and expects: pass (no error, complete search) or counterexample (an error).
    defines=(); pan_flags=(-DSAFETY); run_flags=(); expected=pass; opt=-O1
    case "$name" in
        fixed) ;;
        terminates) pan_flags=(-DNP); run_flags=(-l) ;;   # non-progress cycles: with no progress label, any cycle
        BUG_*) defines=(-D"$name"); expected=counterexample; opt=-O0 ;;   # stops early: compiling is the cost
        *) echo "model-check.sh: unknown case $name (try --list)" >&2; exit 64 ;;
    esac
    dir=".data/model-check/$name"
    rm -rf "$dir"; mkdir -p "$dir"
    cp "$MODEL" "$dir/model.pml"
    t0=$SECONDS
    (cd "$dir" && spin -a "${sizes[@]}" "${defines[@]}" model.pml >spin.log 2>&1) || { cat "$dir/spin.log"; exit 1; }
    # -w: gcc's array-bounds warnings on pan's generated loops are noise. MEMLIM keeps a runaway case from eating
    # the machine (it then reports an incomplete search, which fails the case); COLLAPSE compresses states losslessly.
    (cd "$dir" && gcc "$opt" -w "${pan_flags[@]}" "${memory[@]}" -o pan pan.c)
    (cd "$dir" && ./pan -m200000 "$hash" "${run_flags[@]}" >pan.log 2>&1) || true
    seconds=$((SECONDS - t0))

    echo "== $name (${defines[*]:-no switch}${run_flags[*]:+, ./pan ${run_flags[*]}})"
    grep -E '^(pan:|Warning|State-vector| +[0-9]+ states, stored|	\(|error)' "$dir/pan.log" | grep -v '^pan: elapsed\|^pan: rate' || true
    errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' "$dir/pan.log" | head -1)
    states=$(sed -n 's/^ *\([0-9][0-9]*\) states, stored.*/\1/p' "$dir/pan.log" | head -1)
    incomplete=$(grep -cE 'Search not completed|max search depth too small|out of memory' "$dir/pan.log" || true)
    total_states=$((total_states + ${states:-0}))

    if [[ -z "$errors" ]]; then
        got=broken
    elif [[ "$errors" -gt 0 ]]; then
        got=counterexample
        if [[ -f "$dir/model.pml.trail" ]]; then
            echo "-- counterexample:"
            # The model's own printf lines (the story, then the state where it broke) and the failed assertion.
            (cd "$dir" && spin -t "${sizes[@]}" "${defines[@]}" model.pml 2>&1) \
                | grep -E '^      |failed assertion' | sed 's/^ */   /' | head -60 || true
        fi
    elif [[ "$incomplete" -gt 0 ]]; then
        got=incomplete
    else
        got=pass
    fi
    ok=ok; [[ "$got" == "$expected" ]] || { ok=FAILED; failed=$((failed + 1)); }
    echo "MODEL case=$name expected=$expected got=$got states=${states:-0} seconds=$seconds $ok"
done
echo "RESULT cases=${#cases[@]} failed=$failed states=$total_states seconds=$((SECONDS - started))"
[[ $failed -eq 0 ]]
