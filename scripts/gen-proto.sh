#!/usr/bin/env bash
# Regenerates the committed message code from proto/*.proto:
#   Sources/ProtoC            C structs and (un)packers, by protoc-c (protobuf-c)
#   Sources/Proto/Generated   Swift value types bridged to them, by scripts/gen-swift-proto.py
#   scripts/gen-proto.sh          write the generated files
#   scripts/gen-proto.sh --check  fail when the committed files differ from what the generators produce
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc-c >/dev/null || { echo "protoc-c missing: apt-get install protobuf-c-compiler" >&2; exit 1; }
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
mkdir -p "$out/c/include" "$out/swift"
protoc-c --proto_path=proto --c_out="$out/c" proto/*.proto
mv "$out"/c/*.pb-c.h "$out/c/include/"
python3 scripts/gen-swift-proto.py "$out/swift" proto/*.proto

if [[ "${1:-}" == "--check" ]]; then
  if diff -r "$out/c" Sources/ProtoC >/dev/null && diff -r "$out/swift" Sources/Proto/Generated >/dev/null; then
    echo "generated message code is up to date"
  else
    diff -r "$out/c" Sources/ProtoC | head -20 >&2 || true
    diff -r "$out/swift" Sources/Proto/Generated | head -20 >&2 || true
    echo "generated message code is stale: run scripts/gen-proto.sh and commit" >&2
    exit 1
  fi
  exit 0
fi
rm -rf Sources/ProtoC Sources/Proto/Generated
cp -r "$out/c" Sources/ProtoC
cp -r "$out/swift" Sources/Proto/Generated
echo "generated: $(cd "$out" && find . -type f | sort | tr '\n' ' ')"
