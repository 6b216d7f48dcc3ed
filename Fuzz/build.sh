#!/usr/bin/env bash
# Builds the libFuzzer harness (Fuzz/*.swift) into .data/fuzz/<config>/flashsale-fuzz.
#   Fuzz/build.sh [debug|release]     (default: debug, the configuration the tests build)
#
# SwiftPM cannot link a libFuzzer executable (it renames the target's main and defines its own with --defsym, which
# collides with libFuzzer's main), so the harness is built with swiftc directly:
# - instrumented (-sanitize=fuzzer,address): the harness, Sources/Proto (every message's bridge to protobuf-c) and
#   the frame decoder, compiled as one module; the generated protobuf-c C (clang -fsanitize=fuzzer-no-link,address);
# - linked as they are: NIOCore and its dependencies, taken from SwiftPM's build of the package (`swift build`
#   builds them; the compiler flags for their C modules are read from SwiftPM's build manifest), and Debian's
#   libprotobuf-c (not instrumented: the fuzzer gets no coverage feedback from inside protobuf_c_message_unpack,
#   only from our side of it; upstream protobuf-c is fuzzed by OSS-Fuzz).
# Rebuilds only when a source is newer than the binary.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[[ -x /opt/swift/usr/bin/swift ]] && export PATH="/opt/swift/usr/bin:$PATH"
CONFIG=${1:-debug}
OUT=$ROOT/.data/fuzz/$CONFIG
BIN=$OUT/flashsale-fuzz
SWIFT_SOURCES=(Fuzz/*.swift Sources/Proto/*.swift Sources/Proto/Generated/*.swift Sources/Wire/Framing/FrameDecoder.swift)
C_SOURCES=(Sources/ProtoC/*.c)

if [[ -x $BIN ]] && [[ -z $(find "${SWIFT_SOURCES[@]}" "${C_SOURCES[@]}" Sources/ProtoC/include Fuzz/build.sh -newer "$BIN" 2>/dev/null) ]]; then
  echo "$BIN is up to date" >&2
  exit 0
fi

# NIOCore and the Proto target's C modules, built by SwiftPM. Not when they are built already: a test runs this
# script from inside `swift test`, which holds the build folder's lock.
BIN_PATH=$ROOT/.build/$CONFIG
MANIFEST=$ROOT/.build/$CONFIG.yaml
if [[ ! -f $MANIFEST || ! -d $BIN_PATH/NIOCore.build || ! -d $BIN_PATH/ProtoC.build ]]; then
  swift build -c "$CONFIG" --target Proto >&2
fi
mkdir -p "$OUT/obj"

# The Proto target's compiler flags (module search paths, C module maps) and the object files of every module it
# depends on, transitively, from SwiftPM's manifest.
python3 - "$MANIFEST" "$BIN_PATH" "$OUT" <<'PY'
import json, re, sys, os
manifest, bin_path, out = sys.argv[1:]
commands, current = {}, None
for line in open(manifest):
    m = re.match(r'^  "(C\.[^"]+)":\s*$', line)
    if m: current = m.group(1); commands[current] = {}; continue
    m = re.match(r'^    (inputs|args): (\[.*\])\s*$', line)
    if m and current: commands[current][m.group(1)] = json.loads(m.group(2))
def module_command(name):
    for key, value in commands.items():
        if key.startswith(f"C.{name}-") and key.endswith(".module") and "args" in value: return value
    return None
proto = module_command("Proto")
flags, args, i = [], proto["args"], 0
while i < len(args):
    a = args[i]
    if a == "-I": flags += [a, args[i + 1]]; i += 2; continue
    if a == "-Xcc" and (args[i + 1].startswith("-fmodule-map-file=") or args[i + 1] == "-I"):
        take = 2 if args[i + 1].startswith("-f") else 4
        flags += args[i:i + take]; i += take; continue
    i += 1
objects, seen, todo = set(), set(), ["Proto"]
while todo:
    name = todo.pop()
    if name in seen: continue
    seen.add(name)
    command = module_command(name)
    if command is None: continue
    for path in command.get("inputs", []):
        if path.endswith(".o"): objects.add(path)
        elif path.endswith(".swiftmodule"): todo.append(os.path.basename(path)[:-len(".swiftmodule")])
    if name not in ("Proto", "ProtoC"):
        d = os.path.join(bin_path, f"{name}.build")
        if os.path.isdir(d): objects.update(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".o"))
objects = {o for o in objects if "/ProtoC.build/" not in o}
open(os.path.join(out, "swift-flags"), "w").write("\n".join(flags) + "\n")
open(os.path.join(out, "link-objects"), "w").write("\n".join(sorted(objects)) + "\n")
PY
mapfile -t FLAGS <"$OUT/swift-flags"
mapfile -t OBJECTS <"$OUT/link-objects"

C_OBJECTS=()
for c in "${C_SOURCES[@]}"; do
  o=$OUT/obj/$(basename "$c" .c).o
  clang -fsanitize=fuzzer-no-link,address -g -O1 -fPIC -I Sources/ProtoC/include -c "$c" -o "$o"
  C_OBJECTS+=("$o")
done

echo "compiling the harness ($CONFIG NIOCore)..." >&2
# ld.gold prints "Cannot export local symbol __asan_..." for the ASan runtime: harmless (PLATFORM-NOTES.md).
swiftc -sanitize=fuzzer,address -parse-as-library -module-name FlashSaleFuzz -package-name flashsale -swift-version 6 -O -g \
  -module-cache-path "$OUT/module-cache" "${FLAGS[@]}" \
  "${SWIFT_SOURCES[@]}" "${C_OBJECTS[@]}" "${OBJECTS[@]}" -lprotobuf-c -o "$BIN.tmp" 2> >(grep -v "Cannot export local symbol" >&2)
mv "$BIN.tmp" "$BIN"
echo "built $BIN" >&2
