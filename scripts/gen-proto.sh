#!/usr/bin/env bash
# Regenerates the committed contract code from proto/*.proto, through protoc's descriptors:
#   Sources/ProtoC            C structs and (un)packers of the message files, by protoc-c (protobuf-c)
#   Sources/Proto/Generated   Swift value types bridged to them (*.pb.swift) and the method table of the service
#                             blocks (*.rpc.swift), by scripts/gen-swift-proto.py
#   Sources/Wire/Generated    per service a server protocol with `register(into:)` and a typed client stub
#                             (*.stubs.swift), by the same
#   README.md                 the method table between its markers, by the same
#   scripts/gen-proto.sh          write the generated files
#   scripts/gen-proto.sh --check  fail when the committed files differ from what the generators produce
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc-c >/dev/null || { echo "protoc-c missing: apt-get install protobuf-c-compiler" >&2; exit 1; }
[[ -f /usr/include/google/protobuf/descriptor.proto ]] || { echo "descriptor.proto missing: apt-get install libprotobuf-dev" >&2; exit 1; }
# The generator reads the descriptors with protobuf's Python library: Debian's python3-protobuf (for /usr/bin/python3)
# or `pip install protobuf` for the python3 on PATH.
python=""
for candidate in python3 /usr/bin/python3; do
  if "$candidate" -c 'import google.protobuf.descriptor_pb2' 2>/dev/null; then python=$candidate; break; fi
done
[[ -n $python ]] || { echo "protobuf for Python missing: apt-get install python3-protobuf" >&2; exit 1; }

out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
mkdir -p "$out/c/include" "$out/swift" "$out/wire"
set_file=$out/descriptors.pb
protoc-c --proto_path=proto --proto_path=/usr/include --descriptor_set_out="$set_file" --include_imports \
  --include_source_info proto/*.proto
# C for the message files only: services.proto and options.proto need descriptor.proto, whose C protobuf-c lacks.
read -r -a c_sources <<<"$("$python" scripts/gen-swift-proto.py --c-sources "$set_file")"
protoc-c --proto_path=proto --c_out="$out/c" "${c_sources[@]}"
mv "$out"/c/*.pb-c.h "$out/c/include/"
cp README.md "$out/README.md"
"$python" scripts/gen-swift-proto.py "$set_file" "$out/swift" "$out/wire" "$out/README.md"

if [[ "${1:-}" == "--check" ]]; then
  if diff -r "$out/c" Sources/ProtoC >/dev/null && diff -r "$out/swift" Sources/Proto/Generated >/dev/null \
      && diff -r "$out/wire" Sources/Wire/Generated >/dev/null && diff "$out/README.md" README.md >/dev/null; then
    echo "generated contract code is up to date"
  else
    diff -r "$out/c" Sources/ProtoC | head -20 >&2 || true
    diff -r "$out/swift" Sources/Proto/Generated | head -20 >&2 || true
    diff -r "$out/wire" Sources/Wire/Generated | head -20 >&2 || true
    diff "$out/README.md" README.md | head -20 >&2 || true
    echo "generated contract code is stale: run scripts/gen-proto.sh and commit" >&2
    exit 1
  fi
  exit 0
fi
rm -rf Sources/ProtoC Sources/Proto/Generated Sources/Wire/Generated
cp -r "$out/c" Sources/ProtoC
cp -r "$out/swift" Sources/Proto/Generated
cp -r "$out/wire" Sources/Wire/Generated
cp "$out/README.md" README.md
echo "generated: $(cd "$out" && find c swift wire -type f | sort | tr '\n' ' ') README.md (method table)"
