#!/usr/bin/env bash
# Installs the Debian packages the test world needs (idempotent, quick when already installed):
# Redis, etcd, Go and the kubernetes source package (to build kube-apiserver/controller-manager),
# kubectl, rsync, openssl (kube-up.sh makes its keys with it), Chromium with its WebDriver
# (chromium, chromium-driver: the console page's headless browser test), umoci and skopeo (the
# daemonless OCI image builds, images/build-oci.sh), python3-venv; then the Helm v4 SDK from
# PyPI (helm-python-sdk) in a virtualenv under ${WASP_CACHE:-~/.cache/wasp}/venv, which
# scripts/helm.py uses, and Node ≥ 20.10 (the seed-003 CRM test client). Run as root (CI and
# the dev machines are root); uses sudo otherwise.
set -euo pipefail

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

PKGS=(redis-server etcd-server golang-go rsync dpkg-dev openssl
      golang-github-modern-go-reflect2-dev curl ca-certificates
      chromium chromium-driver umoci skopeo python3 python3-venv)
# Any kubectl will do; Debian's kubernetes-client conflicts with one installed from elsewhere.
command -v kubectl >/dev/null 2>&1 || PKGS+=(kubernetes-client)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# deb-src entries so `apt-get source kubernetes` works (Debian's sources file lists only binaries).
SRC=/etc/apt/sources.list.d/wasp-deb-src.sources
if [ ! -f "$SRC" ]; then
  $SUDO tee "$SRC" >/dev/null <<'SOURCES'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  need_update=1
fi

if [ "${#missing[@]}" -gt 0 ] || [ -n "${need_update:-}" ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    # A first dpkg pass can fail configuring a service package in a container without an init
    # system; finishing the configuration and retrying once settles it.
    if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/wasp-apt.log 2>&1; then
      $SUDO dpkg --configure -a >>/tmp/wasp-apt.log 2>&1 || true
      $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >>/tmp/wasp-apt.log 2>&1 \
        || { tail -40 /tmp/wasp-apt.log >&2; exit 1; }
    fi
  fi
fi

# Debian starts redis-server and etcd as system services on install; the tests start their own
# instances on free ports, so the system ones are only in the way.
for svc in redis-server etcd; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $SUDO systemctl stop "$svc" || true
  fi
done

# The Helm v4 SDK (no helm binary): a virtualenv of its own, made once, the version pinned.
HELM_SDK_VERSION=0.2.2
VENV=${WASP_CACHE:-$HOME/.cache/wasp}/venv
if ! "$VENV/bin/python3" -c "import helm_python, sys; sys.exit(helm_python.__version__ != '$HELM_SDK_VERSION')" 2>/dev/null; then
  echo "install-deps: installing helm-python-sdk $HELM_SDK_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "helm-python-sdk==$HELM_SDK_VERSION"
fi
# The Standard Webhooks reference implementation: the webhook tests verify wasp's signatures
# with it, not with wasp's own code.
STANDARDWEBHOOKS_VERSION=1.1.0
if ! "$VENV/bin/pip" show standardwebhooks 2>/dev/null | grep -qx "Version: $STANDARDWEBHOOKS_VERSION"; then
  echo "install-deps: installing standardwebhooks $STANDARDWEBHOOKS_VERSION into $VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check "standardwebhooks==$STANDARDWEBHOOKS_VERSION"
fi

# Node ≥ 20.10 runs the seed-003 CRM test client (global fetch; WebSocket with
# --experimental-websocket). Debian bookworm's nodejs is 18: npm's `node` package ships a
# current build from the npm registry.
node_ok() {
  command -v node >/dev/null 2>&1 && node -e '
    const [a, b] = process.versions.node.split(".").map(Number);
    process.exit(a > 20 || (a === 20 && b >= 10) ? 0 : 1)'
}
if ! node_ok; then
  echo "install-deps: installing Node 20 (npm package node@20)" >&2
  if ! command -v npm >/dev/null 2>&1; then
    $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >>/tmp/wasp-apt.log 2>&1
  fi
  $SUDO npm install -g --silent node@20 >/tmp/wasp-npm.log 2>&1 || { tail -20 /tmp/wasp-npm.log >&2; exit 1; }
  hash -r
  node_ok || { echo "install-deps: Node ≥ 20.10 is needed (found $(node --version 2>&1))" >&2; exit 1; }
fi
