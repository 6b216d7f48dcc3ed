#!/usr/bin/env bash
# Installs the Debian packages the project needs, only if something is missing (idempotent).
set -euo pipefail

# libprotobuf-dev (descriptor.proto) and python3-protobuf (descriptor_pb2): scripts/gen-proto.sh reads protoc's
# descriptors of proto/ with them. prometheus (with promtool), chromium and tmux: the operator's-view tests (a real
# Prometheus on deploy/prometheus, the sale report page in a headless browser, `flashsale status --watch` in a terminal).
PACKAGES=(libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev python3-protobuf libpq-dev postgresql-15
          postgresql-client-15 libzookeeper-mt-dev libssl-dev zookeeper python3 spin gcc prometheus chromium tmux)

missing=()
for p in "${PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
    [ "$status" = "install ok installed" ] || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-deps.sh: all packages present"
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO=(sudo)
fi

echo "install-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q "${missing[@]}"
