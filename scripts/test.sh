#!/usr/bin/env bash
# The test command: install everything the tests need on a fresh machine, lint, and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# a real kube-apiserver for the Kubernetes datastore tests: built once per machine, then cached
bash scripts/kube-tools.sh >/dev/null
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
exec .venv/bin/pytest -ra "$@"
