#!/usr/bin/env bash
# Compile the compiled relay, the `whereabouts` executable install-cni puts on the nodes when the bundle carries
# it (src/whereabouts/node/relay.c; docs/architecture.md), into OUT; prints OUT:
#   bash scripts/build-relay.sh /tmp/whereabouts-relay [COMPILER FLAGS...]
# Static (glibc's libc.a from libc6-dev): install-cni copies it onto hosts of any distro. Without a compiler it
# says so and exits 1; the image then carries the Python relay alone. CC overrides the compiler (gcc).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:?usage: build-relay.sh OUT [COMPILER FLAGS...]}
shift
CC=${CC:-gcc}
if ! command -v "$CC" >/dev/null; then
    echo "build-relay: no C compiler ($CC): install gcc and libc6-dev (apt-get install gcc libc6-dev)" >&2
    exit 1
fi
staging="$out.$$.tmp"
trap 'rm -f "$staging"' EXIT
if ! "$CC" -O2 -static -s -Wall -Wextra "$@" -o "$staging" src/whereabouts/node/relay.c; then
    echo "build-relay: $CC failed (a static build needs libc.a: apt-get install libc6-dev)" >&2
    exit 1
fi
mv "$staging" "$out"
echo "$out"
