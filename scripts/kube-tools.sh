#!/usr/bin/env bash
# Provide a real kube-apiserver (1.20.2, built from Debian's `kubernetes` source package) and the matching
# kubectl (Debian's `kubernetes-client`, unpacked, not installed) in a cache directory, for the tests.
# With --node, also the node's binaries: kubelet, kube-scheduler and kube-controller-manager (a single-node
# cluster, see ../shared/REALNODE.md). Built once per machine (about 6 minutes on 2 cores for the apiserver,
# as much again for the node); later runs find the binaries and return at once.
# Prints the directory holding them.
set -euo pipefail

CACHE=${WHEREABOUTS_CACHE:-/var/cache/whereabouts-py}/k8s-1.20.2
TARGETS=(kube-apiserver)
[ "${1:-}" = "--node" ] && TARGETS+=(kubelet kube-scheduler kube-controller-manager)
missing=()
for target in "${TARGETS[@]}"; do
    [ -x "$CACHE/$target" ] || missing+=("$target")
done
if [ "${#missing[@]}" -eq 0 ] && [ -x "$CACHE/kubectl" ]; then
    echo "$CACHE"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "kube-tools: building kube-apiserver needs root (apt-get); run as root once" >&2
    exit 1
fi
mkdir -p "$CACHE"
log() { echo "kube-tools: $*" >&2; }

# Debian's source packages: the same archive as the machine's binary packages, as deb-src.
SRC_LIST=/etc/apt/sources.list.d/whereabouts-deb-src.sources
if [ ! -f "$SRC_LIST" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$SRC_LIST"
elif [ ! -f "$SRC_LIST" ] && [ -f /etc/apt/sources.list ]; then
    grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' > "${SRC_LIST%.sources}.list"
fi
log "installing the Go toolchain and build tools"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev >/dev/null

WORK=$(mktemp -d /var/tmp/k8s-build.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

if [ ! -x "$CACHE/kubectl" ]; then
    log "unpacking kubectl from Debian's kubernetes-client"
    apt-get download kubernetes-client >/dev/null 2>&1
    dpkg-deb -x kubernetes-client_*.deb client
    install -m 0755 client/usr/bin/kubectl "$CACHE/kubectl"
fi

if [ "${#missing[@]}" -gt 0 ]; then
    log "fetching the kubernetes source package"
    apt-get source --download-only kubernetes >/dev/null 2>&1
    dpkg-source --no-check -x kubernetes_*.dsc src >/dev/null
    # The vendored reflect2 1.0.1 crashes under Go >= 1.18; Debian's 1.0.2 does not.
    rm -rf src/vendor/github.com/modern-go/reflect2
    cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 src/vendor/github.com/modern-go/reflect2
    rm -f src/vendor/github.com/modern-go/reflect2/go.mod
    log "building ${missing[*]} (several minutes)"
    export GOCACHE="$WORK/gocache" GOFLAGS=-mod=vendor CGO_ENABLED=0
    what=$(printf 'cmd/%s ' "${missing[@]}")
    make -C src WHAT="${what% }" >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; exit 1; }
    for target in "${missing[@]}"; do
        install -m 0755 "$(find src/_output -type f -name "$target" | head -1)" "$CACHE/$target"
    done
fi
echo "$CACHE"
