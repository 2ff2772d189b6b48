#!/usr/bin/env bash
# Install what the plugin, its demo and its tests need on a fresh Debian machine (run as root), and the
# project's Python environment in .venv. Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

# gcc and libc6-dev: the compiled relay (scripts/build-relay.sh), which the tests build
APT_PACKAGES=(containernetworking-plugins iproute2 iputils-ping socat etcd-server sqlite3 openssl gcc libc6-dev)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing Debian packages ${missing[*]}; run as root (or install them) first" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
