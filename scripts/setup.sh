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

# promtool, for the tests of the alerting rules (deploy/monitoring): unpacked from Debian's `prometheus` package
# into a cache directory, not installed (no Prometheus server is set up or started)
PROMTOOL_DIR=${WHEREABOUTS_CACHE:-/var/cache/whereabouts-py}/promtool
if [ ! -x "$PROMTOOL_DIR/promtool" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: promtool missing from $PROMTOOL_DIR; run as root once (the alert rules' tests need it)" >&2
    else
        echo "setup: unpacking promtool from Debian's prometheus package"
        unpack=$(mktemp -d)
        (cd "$unpack" && apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; })
        dpkg-deb -x "$unpack"/prometheus_*.deb "$unpack/root"
        mkdir -p "$PROMTOOL_DIR"
        install -m 0755 "$unpack/root/usr/bin/promtool" "$PROMTOOL_DIR/promtool"
        rm -rf "$unpack"
    fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
