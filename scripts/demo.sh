#!/usr/bin/env bash
# The demo: set the machine up, then walk through whereabouts on the local datastore (see scripts/demo.py).
# As root it runs pods in network namespaces with the reference bridge plugin; otherwise it shows IPAM only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ] || [ ! -e .venv ] || [ -w .venv ]; then
    bash scripts/setup.sh
elif [ ! -x .venv/bin/whereabouts ]; then
    echo "demo: .venv is not set up and $(id -un) cannot write it; run 'bash scripts/setup.sh' as root first" >&2
    exit 1
fi
exec .venv/bin/python scripts/demo.py "$@"
