#!/usr/bin/env bash
# Builds wasp's images without a container engine, as OCI image layouts, from binaries that are
# already built (Debian's umoci writes the layout; skopeo copies it on):
#
#   images/build-oci.sh --bin-dir DIR --out DIR [--version V] [--archive] [IMAGE...]
#
#   --bin-dir DIR   where wasp-operator, wasp-api, wasp-session-pod, wasp-sim are
#                   (release images: target/release after `cargo build --release -p <package>`,
#                   one package at a time, as the Dockerfiles do; never a session pod built with
#                   the insecure-sim feature)
#   --out DIR       gets one OCI layout per image: DIR/<image>, tag V (e.g. oci:DIR/api:0.1.0)
#   --version V     image tag and org.opencontainers.image.version (default: the workspace's)
#   --archive       also write DIR/<image>.tar, an oci-archive that `skopeo copy`, `podman load`
#                   and registries take
#   --allow-insecure-sim
#                   accept a session pod built with the insecure-sim feature (tests, local demo);
#                   without it such a binary is refused (exit 3)
#   IMAGE...        operator api session-pod sim (default: all four)
#
# Each image is what images/<image>/Dockerfile builds: the root filesystem from
# images/rootfs.sh, and the USER, ENTRYPOINT and LABEL lines of that Dockerfile (read from it,
# so the two cannot drift). Push one: skopeo copy oci:DIR/api:V docker://REGISTRY/wasp/api:V
# Prints one line per image: name, layout, compressed size, unpacked size (bytes).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")

bin_dir="" out="" version="" archive=0 allow_insecure=0 images=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --archive) archive=1; shift ;;
    --allow-insecure-sim) allow_insecure=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "build-oci.sh: unknown option $1" >&2; exit 2 ;;
    *) images+=("$1"); shift ;;
  esac
done
[ -n "$bin_dir" ] && [ -n "$out" ] || { echo "build-oci.sh: --bin-dir and --out are required (see --help)" >&2; exit 2; }
[ ${#images[@]} -gt 0 ] || images=(operator api session-pod sim)
if [ -z "$version" ]; then
  version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")
fi
for tool in umoci skopeo; do
  command -v "$tool" >/dev/null || { echo "build-oci.sh: $tool is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
done
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Whether a session pod binary was built with the insecure-sim feature: such a build refuses a
# non-loopback WhatsApp URL in its first check (session-pod/src/config.rs, `validate`), before
# it reads the master key; a production build passes that check and stops at the bad key.
insecure_sim() {
  local said
  said=$(env -i WASP_USER_ID=probe WASP_SESSION_NAME=probe WASP_SESSION_NAMESPACE=probe \
    REDIS_URL=redis://127.0.0.1:1 WASP_MASTER_KEY=not-a-key WASP_CONTROL_TOKEN=probe \
    WASP_WHATSAPP_URL=wss://web.whatsapp.com/ws/chat \
    WASP_CONTROL_ADDR=127.0.0.1:0 WASP_ADMIN_ADDR=127.0.0.1:0 \
    timeout -k 1 10 "$1" 2>&1 || true)
  case "$said" in
    *"insecure-sim feature"*) return 0 ;;
    *"master key"*) return 1 ;;
    *) echo "build-oci.sh: cannot tell how $1 was built: $said" >&2; exit 1 ;;
  esac
}

# The value of a Dockerfile instruction (first match), e.g. `USER`.
instruction() { sed -n "s/^$1 \(.*\)$/\1/p" "$2" | head -1; }

for image in "${images[@]}"; do
  dockerfile="$here/$image/Dockerfile"
  [ -f "$dockerfile" ] || { echo "build-oci.sh: no $dockerfile" >&2; exit 2; }
  user=$(instruction USER "$dockerfile")
  # ENTRYPOINT ["/usr/local/bin/wasp-api"] -> /usr/local/bin/wasp-api
  entrypoint=$(instruction ENTRYPOINT "$dockerfile" | sed 's/^\["\(.*\)"\]$/\1/')
  binary=$(basename "$entrypoint")
  [ -x "$bin_dir/$binary" ] || { echo "build-oci.sh: $bin_dir/$binary is missing" >&2; exit 1; }
  if [ "$binary" = wasp-session-pod ] && [ "$allow_insecure" = 0 ] && insecure_sim "$bin_dir/$binary"; then
    echo "build-oci.sh: $bin_dir/$binary was built with the insecure-sim feature (it skips WhatsApp's" \
      "certificate check); build it with \`cargo build --release -p wasp-session-pod\`, or pass" \
      "--allow-insecure-sim for a test image" >&2
    exit 3
  fi

  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  sh "$here/rootfs.sh" "$bin_dir/$binary" "$work/rootfs"

  layout="$out/$image"
  rm -rf "$layout"
  umoci init --layout "$layout"
  umoci new --image "$layout:$version"
  umoci insert --image "$layout:$version" "$work/rootfs" /
  label_args=()
  while IFS= read -r label; do
    # LABEL key="value" (one per line); ${VERSION} is the Dockerfile's build argument.
    key=${label%%=*}
    value=${label#*=}
    value=${value#\"}; value=${value%\"}
    value=${value//\$\{VERSION\}/$version}
    label_args+=(--config.label "$key=$value")
  done < <(sed -n 's/^LABEL \(.*\)$/\1/p' "$dockerfile")
  umoci config --image "$layout:$version" \
    --config.user "$user" \
    --config.entrypoint "$entrypoint" \
    --config.workingdir / \
    --os linux --architecture "$(dpkg --print-architecture)" \
    "${label_args[@]}"
  umoci gc --layout "$layout"
  if [ "$archive" = 1 ]; then
    rm -f "$out/$image.tar"
    skopeo copy --quiet "oci:$layout:$version" "oci-archive:$out/$image.tar:wasp/$image:$version"
  fi

  compressed=$(du -sb --apparent-size "$layout/blobs" | cut -f1)
  unpacked=$(du -sb --apparent-size "$work/rootfs" | cut -f1)
  echo "$image $layout:$version compressed=$compressed unpacked=$unpacked"
  rm -rf "$work"
  trap - EXIT
done
