#!/usr/bin/env bash
# Stops what kube-up.sh started in STATE_DIR: SIGTERM, then SIGKILL for whatever is still alive after
# a grace period. Idempotent: a directory with nothing running (or no directory at all) is fine.
#
#   kube-down.sh STATE_DIR [--rm] [--only NAME]
#
#   --rm         also delete STATE_DIR (etcd data, keys, logs)
#   --only NAME  stop just one component (etcd, kube-apiserver, kube-controller-manager, watchdog);
#                kube-up uses it to retry a component that lost a race for its port
set -euo pipefail

usage() { echo "usage: $0 STATE_DIR [--rm] [--only NAME]" >&2; exit 2; }
[ $# -ge 1 ] || usage
RAW=$1
shift
RM="" ONLY=""
while [ $# -gt 0 ]; do
  case $1 in
    --rm) RM=1; shift ;;
    --only) [ $# -ge 2 ] || usage; ONLY=$2; shift 2 ;;
    *) usage ;;
  esac
done

[ -d "$RAW" ] || exit 0
STATE=$(cd "$RAW" && pwd)

# Consumers before what they consume, so neither the controller-manager nor the apiserver spends its
# last seconds logging etcd errors; the watchdog goes too, or it would later stop a cluster that was
# restarted by hand in the same directory.
NAMES=(watchdog kube-controller-manager kube-apiserver etcd)
[ -z "$ONLY" ] || NAMES=("$ONLY")

# Only a PID that still runs a command line naming a path in STATE_DIR is ours (PIDs get recycled;
# the trailing / keeps /tmp/k from matching /tmp/k2). The watchdog itself becomes this script (it
# execs kube-down), so never signal our own PID or parent.
ours() { # PID
  [ "$1" != "$$" ] && [ "$1" != "$PPID" ] && [ -r "/proc/$1/cmdline" ] &&
    tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$STATE/"
}

pids=()
for name in "${NAMES[@]}"; do
  f="$STATE/pids/$name.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
  fi
  rm -f "$f"
done

# Graceful shutdown takes well under a second each; allow 10 s, then force.
# (A zombie's cmdline is empty, so an exited but unreaped process no longer counts as ours.)
alive() { local p; for p in "$@"; do ours "$p" && return 0; done; return 1; }
deadline=$((SECONDS + 10))
while [ "${#pids[@]}" -gt 0 ] && alive "${pids[@]}" && [ "$SECONDS" -lt "$deadline" ]; do
  sleep 0.1
done
for pid in "${pids[@]}"; do
  if ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
done

if [ -n "$RM" ]; then
  rm -rf "$STATE"
fi
