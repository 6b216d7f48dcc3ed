#!/usr/bin/env bash
# The one entry point of every benchmark: scripts/bench.sh NAME [ARGS...]
# Each benchmark lives in scripts/bench/NAME.sh: it builds in release mode, installs and starts what it needs,
# prints a readable report and ends with one line `RESULT key=value ...`.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-}
if [[ -z "$name" || ! -f "scripts/bench/$name.sh" ]]; then
  echo "usage: scripts/bench.sh NAME   where NAME is one of: $(cd scripts/bench && ls *.sh 2>/dev/null | sed 's/\.sh$//' | tr '\n' ' ')" >&2
  exit 2
fi
shift
exec bash "scripts/bench/$name.sh" "$@"
