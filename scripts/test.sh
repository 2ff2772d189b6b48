#!/usr/bin/env bash
# The test command: install everything the tests need on a fresh machine, lint, and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$(id -u)" -eq 0 ]; then
    # a real kube-apiserver for the Kubernetes datastore tests, and the kubelet, scheduler and controller-manager
    # of the real node (tests/realnode): built once per machine (about 16 minutes on 2 cores), then cached
    bash scripts/kube-tools.sh --node >/dev/null
    # the real node's packages (containerd, runc, ...) and images (pause, busybox, a Python root): cached too
    bash scripts/node-tools.sh >/dev/null
else
    bash scripts/kube-tools.sh >/dev/null  # the real-node tests need root and skip without it
fi
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache  # the layers (pyproject.toml)
.venv/bin/mypy  # strict, over src/whereabouts: see [tool.mypy] in pyproject.toml
# Bytecode written once and reused: every CNI call a test makes is a new process, and without .pyc files each
# compiles the plugin's modules again (~30 ms a call; these machines set PYTHONDONTWRITEBYTECODE=1)
unset PYTHONDONTWRITEBYTECODE
exec .venv/bin/pytest -ra "$@"
