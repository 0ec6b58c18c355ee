#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager from Debian's kubernetes source package into a
# cache directory outside the repo (once; ~10 min on 2 cores). Prints the bin directory.
#
#   WASP_CACHE   cache root (default ~/.cache/wasp)
#
# Known fix applied: the vendored github.com/modern-go/reflect2 v1.0.1 segfaults under Go >= 1.18
# (map iteration); it is replaced by Debian's golang-github-modern-go-reflect2-dev (1.0.2).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
CACHE=${WASP_CACHE:-$HOME/.cache/wasp}
KUBE_VERSION=v1.20.2
BIN="$CACHE/kube-$KUBE_VERSION/bin"
COMPONENTS=(kube-apiserver kube-controller-manager)

have_all() { for c in "${COMPONENTS[@]}"; do [ -x "$BIN/$c" ] || return 1; done; }
if have_all; then echo "$BIN"; exit 0; fi

bash "$here/install-deps.sh" >&2

SRC_ROOT="$CACHE/kube-src"
mkdir -p "$SRC_ROOT" "$BIN"
src=$(find "$SRC_ROOT" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
if [ -z "$src" ]; then
  echo "build-kube: fetching Debian's kubernetes source package" >&2
  (cd "$SRC_ROOT" && apt-get source kubernetes >/dev/null 2>&1) \
    || { echo "build-kube: apt-get source kubernetes failed (are deb-src entries present?)" >&2; exit 1; }
  src=$(find "$SRC_ROOT" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
fi

echo "build-kube: replacing vendored modern-go/reflect2 with Debian's 1.0.2" >&2
rsync -a --delete --exclude go.mod /usr/share/gocode/src/github.com/modern-go/reflect2/ \
  "$src/vendor/github.com/modern-go/reflect2/"

# Built the way Debian's own rules build it: GOPATH mode through the source's make, which also
# generates the OpenAPI definitions the apiserver needs (they are not in the source tarball) and
# stamps the version (v1.20.2) from the tarball's archive metadata.
gopath="$src/.go"
mkdir -p "$gopath/src/k8s.io"
[ -L "$gopath/src/k8s.io/kubernetes" ] || ln -s ../../.. "$gopath/src/k8s.io/kubernetes"
echo "build-kube: building ${COMPONENTS[*]} (about 10 minutes on 2 cores)" >&2
(cd "$src" && env GOPATH="$gopath" GOFLAGS= GO111MODULE= GOCACHE="$CACHE/go-build" CGO_ENABLED=0 \
   make WHAT="$(printf 'cmd/%s ' "${COMPONENTS[@]}")" >"$CACHE/kube-build.log" 2>&1) \
  || { tail -30 "$CACHE/kube-build.log" >&2; echo "build-kube: failed, full log: $CACHE/kube-build.log" >&2; exit 1; }
for c in "${COMPONENTS[@]}"; do
  install -m 0755 "$src/_output/bin/$c" "$BIN/$c.tmp"
  mv "$BIN/$c.tmp" "$BIN/$c"
done
echo "$BIN"
