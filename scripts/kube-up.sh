#!/usr/bin/env bash
# Starts a real, local Kubernetes control plane for wasp's tests and demo: etcd, kube-apiserver and
# kube-controller-manager (v1.20, built by build-kube.sh), on free loopback ports, with all state,
# keys, PIDs and logs in STATE_DIR. There is no scheduler and no kubelet (see docs/local-kubernetes.md).
#
#   kube-up.sh STATE_DIR [--parent PID] [--rm] [--crds DIR]
#
#   --parent PID   also start a watchdog that runs kube-down.sh STATE_DIR once PID has exited, so a
#                  test binary that ends (or is killed) never leaves processes behind
#   --rm           with --parent: the watchdog also deletes STATE_DIR afterwards
#   --crds DIR     server-side apply the CRDs in DIR (kubectl) before the controller-manager starts,
#                  so its garbage collector knows them from the start (see apply_crds)
#   WASP_KUBE_BIN  directory holding kube-apiserver and kube-controller-manager
#                  (default: whatever build-kube.sh prints; it returns at once when cached)
#   WASP_ETCD      etcd binary (default: etcd on PATH, Debian's etcd-server 3.4)
#
# Prints the kubeconfig path (STATE_DIR/kubeconfig, admin token) on stdout; progress goes to stderr.
# If STATE_DIR already holds a running cluster, it just prints the kubeconfig path again.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
usage() { echo "usage: $0 STATE_DIR [--parent PID] [--rm] [--crds DIR]" >&2; exit 2; }

[ $# -ge 1 ] || usage
mkdir -p "$1"
STATE=$(cd "$1" && pwd) # absolute: it is also how kube-down recognises our processes
shift
PARENT="" RM="" CRDS=""
while [ $# -gt 0 ]; do
  case $1 in
    --crds) [ $# -ge 2 ] || usage; CRDS=$2; shift 2 ;;
    --parent) [ $# -ge 2 ] || usage; PARENT=$2; shift 2 ;;
    --rm) RM=--rm; shift ;;
    *) usage ;;
  esac
done

say() { echo "kube-up: $*" >&2; }
t0=${EPOCHREALTIME/[.,]/}
elapsed() { # seconds since start, one decimal
  local us=$((${EPOCHREALTIME/[.,]/} - t0))
  printf '%d.%d' $((us / 1000000)) $((us / 100000 % 10))
}

# A process we started earlier is alive if its PID still runs a command line naming a path in
# STATE_DIR (guards against a recycled PID; the trailing / keeps /tmp/k from matching /tmp/k2).
ours_alive() {
  local f="$STATE/pids/$1.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$STATE/"
}

# The process this script just started as NAME still runs (exists and is no zombie), whether or
# not it has exec'd yet.
started_alive() {
  local pid
  pid=$(cat "$STATE/pids/$1.pid" 2>/dev/null) || return 1
  [ -r "/proc/$pid/stat" ] && [ "$(awk '{print $3}' "/proc/$pid/stat")" != Z ]
}

if ours_alive kube-apiserver && [ -f "$STATE/kubeconfig" ]; then
  say "already running in $STATE"
  echo "$STATE/kubeconfig"
  exit 0
fi

KUBE_BIN=${WASP_KUBE_BIN:-$(bash "$here/build-kube.sh")}
ETCD=${WASP_ETCD:-$(command -v etcd || true)}
for b in "$KUBE_BIN/kube-apiserver" "$KUBE_BIN/kube-controller-manager" "$ETCD"; do
  [ -x "$b" ] || { say "missing binary: $b (run scripts/install-deps.sh and scripts/build-kube.sh)"; exit 1; }
done
tools=(openssl curl)
[ -z "$CRDS" ] || tools+=(kubectl)
for t in "${tools[@]}"; do
  command -v "$t" >/dev/null || { say "missing tool: $t (run scripts/install-deps.sh)"; exit 1; }
done

# Leftovers of an earlier run in the same directory (crashed, or half started) go first; etcd's data
# and the keys are kept, so a cluster restarted by hand keeps its objects.
bash "$here/kube-down.sh" "$STATE" >/dev/null 2>&1 || true

mkdir -p "$STATE/pids" "$STATE/logs" "$STATE/pki" "$STATE/etcd"
chmod 700 "$STATE/etcd" # etcd refuses a data dir others can read

# Any failure or interruption from here on must not leave half a cluster running.
ok=""
cleanup() { [ -n "$ok" ] || bash "$here/kube-down.sh" "$STATE" >/dev/null 2>&1 || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- free loopback ports --------------------------------------------------------------------------
# Ports are drawn below Linux's ephemeral range (32768+), so an outgoing connection never holds one;
# a port counts as free when nothing accepts a connection on it. Another process can still take it
# between the check and the bind; start_with_retry below picks new ports when that happens.
PICKED=" "
pick_port() { # VAR
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    case $PICKED in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      PICKED+="$p "
      printf -v "$1" %s "$p"
      return
    fi
  done
}

# --- process helpers ------------------------------------------------------------------------------
# Children get stdin from /dev/null and stdout/stderr into logs/, so nobody reading our stdout (the
# Rust harness) waits for them. Being background jobs of a non-interactive shell, they ignore SIGINT:
# a Ctrl-C in a terminal reaches this script, whose trap stops them in order via kube-down.
start() { # NAME CMD...
  local name=$1
  shift
  "$@" </dev/null >"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/pids/$name.pid"
}

# Polls CMD until it succeeds; fails early (with the log tail) when NAME has exited.
wait_until() { # NAME TIMEOUT_S DESCRIPTION CMD...
  local name=$1 timeout=$2 what=$3
  shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    # Alive = the PID we just started still exists. Not ours_alive: between fork and exec the
    # child's cmdline is still this script's (no "$STATE/" in it), and on a loaded machine the
    # first poll lands in that window, which read as "exited" with an empty log.
    if ! started_alive "$name"; then
      say "$name exited while waiting for $what; end of logs/$name.log:"
      tail -n 25 "$STATE/logs/$name.log" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "timed out after ${timeout}s waiting for $what; end of logs/$name.log:"
      tail -n 25 "$STATE/logs/$name.log" >&2
      return 1
    fi
    sleep 0.1
  done
}

# Runs START_FN (which picks its ports, starts NAME and waits for it) up to 3 times while NAME lost
# a race for a port.
start_with_retry() { # NAME START_FN
  local attempt
  for attempt in 1 2 3; do
    if "$2"; then return 0; fi
    grep -q 'address already in use' "$STATE/logs/$1.log" 2>/dev/null || return 1
    say "$1 lost a race for its port (attempt $attempt), retrying on other ports"
    bash "$here/kube-down.sh" "$STATE" --only "$1" >/dev/null 2>&1 || true
  done
  return 1
}

# --- credentials ----------------------------------------------------------------------------------
# Static token file: one admin in system:masters (the harness, kubectl, the controller-manager).
# The token is random per start, so a leftover kubeconfig never opens a later cluster.
TOKEN=$(openssl rand -hex 24)
echo "$TOKEN,wasp-admin,wasp-admin,system:masters" >"$STATE/tokens.csv"
chmod 600 "$STATE/tokens.csv"

# Service-account tokens are signed by the controller-manager (token controller) and the apiserver
# (TokenRequest), and verified by the apiserver, with one RSA key pair.
if [ ! -f "$STATE/pki/sa.key" ]; then
  openssl genrsa -out "$STATE/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$STATE/pki/sa.key" -pubout -out "$STATE/pki/sa.pub" 2>/dev/null
fi

# --- etcd -----------------------------------------------------------------------------------------
start_etcd() {
  pick_port ETCD_PORT
  pick_port ETCD_PEER_PORT
  start etcd "$ETCD" --name wasp --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "wasp=http://127.0.0.1:$ETCD_PEER_PORT"
  wait_until etcd 30 "etcd /health" curl -sf "http://127.0.0.1:$ETCD_PORT/health"
}
start_with_retry etcd start_etcd
say "etcd ready after $(elapsed)s"

# --- kube-apiserver and kube-controller-manager ---------------------------------------------------
# They start together: the controller-manager needs only the kubeconfig (hence the CA) and waits for
# the apiserver's /healthz by itself, so its start overlaps the apiserver's post-start hooks (RBAC
# bootstrap, ~1.5 s) instead of following them.
start_apiserver() {
  # --cert-dir: the apiserver writes a self-signed serving certificate (signed by its own throw-away
  #   CA, both in pki/apiserver.crt) for 127.0.0.1/localhost and reuses it on restart.
  # --insecure-port=0: 1.20 still opens an unauthenticated port 8080 by default.
  # --endpoint-reconciler-type=none: the `kubernetes` Service's endpoints may not be loopback.
  # --enable-admission-plugins adds NodeRestriction to 1.20's default set (NamespaceLifecycle,
  #   ServiceAccount, LimitRanger, Priority, ResourceQuota, webhooks, ...).
  start kube-apiserver "$KUBE_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --secure-port="$API_PORT" --insecure-port=0 \
    --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
    --cert-dir="$STATE/pki" \
    --token-auth-file="$STATE/tokens.csv" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$STATE/pki/sa.pub" \
    --service-account-signing-key-file="$STATE/pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --allow-privileged=true \
    --profiling=false
}

# The serving certificate file holds the leaf, then the CA that signed it: clients trust that CA.
cert_written() { [ "$(grep -c 'BEGIN CERTIFICATE' "$STATE/pki/apiserver.crt" 2>/dev/null)" = 2 ]; }
write_kubeconfig() {
  awk '/BEGIN CERTIFICATE/{n++} n==2' "$STATE/pki/apiserver.crt" >"$STATE/pki/ca.crt"
  openssl verify -CAfile "$STATE/pki/ca.crt" "$STATE/pki/apiserver.crt" >/dev/null
  cat >"$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: wasp-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$STATE/pki/ca.crt")
users:
- name: wasp-admin
  user:
    token: $TOKEN
contexts:
- name: wasp-local
  context:
    cluster: wasp-local
    user: wasp-admin
    namespace: default
current-context: wasp-local
EOF
  chmod 600 "$STATE/kubeconfig"
}

start_controller_manager() {
  # All default controllers (garbage collector, namespace, service account + token, replica set,
  # deployment, ...), with the admin kubeconfig. No leader election: one instance per cluster.
  # --port=0 closes 1.20's insecure port (10252), which would collide between concurrent clusters.
  start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
    --kubeconfig="$STATE/kubeconfig" \
    --authentication-kubeconfig="$STATE/kubeconfig" \
    --authorization-kubeconfig="$STATE/kubeconfig" \
    --leader-elect=false \
    --port=0 --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$STATE/pki/kcm" \
    --service-account-private-key-file="$STATE/pki/sa.key" \
    --root-ca-file="$STATE/pki/ca.crt" \
    --profiling=false
}

# --crds: applied before the controller-manager starts. Its garbage collector reads discovery when
# it starts and then only every 30 s, so custom resources of a CRD installed later may not have their
# dependents collected for up to ~40 s; installed first, they are collected at once.
apply_crds() {
  kubectl --kubeconfig "$STATE/kubeconfig" apply --server-side --force-conflicts \
    --field-manager=wasp-e2e -f "$CRDS" >&2 &&
    kubectl --kubeconfig "$STATE/kubeconfig" wait --for=condition=Established --timeout=30s \
      crd --all >/dev/null
}

apiserver_ready() {
  wait_until kube-apiserver 60 "kube-apiserver /readyz" \
    curl -sfk -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$API_PORT/readyz"
}

start_control_plane() {
  pick_port API_PORT
  pick_port KCM_PORT
  start_apiserver
  wait_until kube-apiserver 30 "the apiserver's serving certificate" cert_written || return 1
  write_kubeconfig
  if [ -n "$CRDS" ]; then
    apiserver_ready || return 1
    apply_crds || { say "applying the CRDs in $CRDS failed"; return 1; }
    start_controller_manager
  else
    start_controller_manager
    apiserver_ready || return 1
  fi
  wait_until kube-controller-manager 60 "kube-controller-manager /healthz" \
    curl -sfk "https://127.0.0.1:$KCM_PORT/healthz"
}

# Like start_with_retry, for the pair: either may have lost a race for its port.
started=""
for attempt in 1 2 3; do
  if start_control_plane; then started=1; break; fi
  cat "$STATE/logs/kube-apiserver.log" "$STATE/logs/kube-controller-manager.log" 2>/dev/null |
    grep -q 'address already in use' || break
  say "the control plane lost a race for a port (attempt $attempt), retrying on other ports"
  bash "$here/kube-down.sh" "$STATE" --only kube-controller-manager >/dev/null 2>&1 || true
  bash "$here/kube-down.sh" "$STATE" --only kube-apiserver >/dev/null 2>&1 || true
done
[ -n "$started" ] || exit 1
say "apiserver and controller-manager ready after $(elapsed)s"

# Ready for tests: the `default` namespace exists and its `default` service account has its token
# (pods are refused by the ServiceAccount admission plugin until then).
api_get() { curl -sfk -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$API_PORT$1"; }
sa_has_token() { api_get /api/v1/namespaces/default/serviceaccounts/default | grep -q '"secrets"'; }
wait_until kube-controller-manager 60 "the default service account's token" sa_has_token

cat >"$STATE/ports.env" <<EOF
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$API_PORT
CONTROLLER_MANAGER_PORT=$KCM_PORT
EOF

# --- watchdog -------------------------------------------------------------------------------------
# Started last: if PARENT dies while we are still starting, the watchdog finds it gone at once and
# cleans up. `tail --pid` returns when PARENT exits (it checks once a second); setsid detaches the
# watchdog from the caller's session and terminal, so only PARENT's end stops the cluster.
if [ -n "$PARENT" ]; then
  setsid bash -c 'tail --pid="$1" -f /dev/null; exec bash "$2" "$3" $4' kube-watchdog \
    "$PARENT" "$here/kube-down.sh" "$STATE/" "$RM" </dev/null >>"$STATE/logs/watchdog.log" 2>&1 &
  echo $! >"$STATE/pids/watchdog.pid"
fi

ok=1
say "ready after $(elapsed)s: apiserver https://127.0.0.1:$API_PORT, etcd 127.0.0.1:$ETCD_PORT"
echo "$STATE/kubeconfig"
