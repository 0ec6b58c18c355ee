#!/bin/sh
# Assembles the whole root filesystem of one wasp image from a built binary:
#   rootfs.sh BINARY OUT_DIR
# OUT_DIR gets /usr/local/bin/<binary>, the shared libraries it loads (as `ldd` resolves them:
# the dynamic loader, libc, libm, libgcc_s), the CA bundle, /etc/passwd and /etc/group with the
# `nonroot` user (65532), /etc/nsswitch.conf (so /etc/hosts is read before DNS), an empty /tmp.
# Nothing else: no shell, no package manager. Both the Dockerfiles (in a debian:bookworm-slim
# stage) and images/build-oci.sh (on this Debian machine) use this script, so both builds ship
# the same file list. POSIX sh, so it runs in a slim stage too.
set -eu
bin=$1
out=$2
name=$(basename "$bin")
[ -x "$bin" ] || { echo "rootfs.sh: $bin is not an executable" >&2; exit 1; }

mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/tmp" "$out/home/nonroot"
cp "$bin" "$out/usr/local/bin/$name"
chmod 0755 "$out/usr/local/bin/$name"

# Every library the binary loads, at the path the loader looks for it (symlinks resolved).
ldd "$bin" | while read -r first second third _; do
  case "$second" in
    "=>") lib=$third ;;                       # libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)
    *) lib=$first ;;                          # /lib64/ld-linux-x86-64.so.2 (0x...)
  esac
  case "$lib" in
    /*) mkdir -p "$out$(dirname "$lib")"; cp -L "$lib" "$out$lib" ;;
    *) ;;                                     # linux-vdso.so.1: provided by the kernel
  esac
done

cp -L /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
cat >"$out/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$out/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
GROUP
echo "hosts: files dns" >"$out/etc/nsswitch.conf"
chmod 1777 "$out/tmp"
chown 65532:65532 "$out/home/nonroot"
chmod 0700 "$out/home/nonroot"
