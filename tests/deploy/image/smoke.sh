#!/usr/bin/env bash
# Build the Dockerfile without a Docker engine and run the image in local mode.
#
# buildah (chroot isolation) builds on a Debian bookworm base made with debootstrap and imported
# with podman, because no base image can be pulled here. The base is cached in $CACHE_DIR.
# Needs root; installs buildah, podman and debootstrap with apt-get when they are missing.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../../.." && pwd)"
CACHE_DIR="${SENTINEL_CI_CACHE:-/var/cache/sentinel-sidecar-ci}"
BASE_IMAGE="localhost/sentinel-base:bookworm"
IMAGE="localhost/sentinel-sidecar:smoke"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

say() { printf 'smoke: %s\n' "$*" >&2; }

missing=()
for tool in buildah podman debootstrap; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  timeout 600 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "${missing[@]}" >/dev/null
fi

mkdir -p "$CACHE_DIR"
if ! podman image exists "$BASE_IMAGE"; then
  tarball="$CACHE_DIR/bookworm-python3.tar"
  if [[ ! -s "$tarball" ]]; then
    say "debootstrap bookworm + python3 python3-venv (cached in $tarball)"
    rootfs="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
    timeout 900 debootstrap --variant=minbase --include=python3,python3-venv \
      bookworm "$rootfs" "$MIRROR" >"$CACHE_DIR/debootstrap.log"
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  timeout 300 podman import "$tarball" "$BASE_IMAGE" >/dev/null
fi

build_args=(--build-arg "PYTHON_IMAGE=$BASE_IMAGE")
if [[ -n "${PIP_CERT:-}" && -f "$PIP_CERT" ]]; then
  # Behind a TLS-inspecting proxy pip needs the host's CA; mounted for the build only.
  build_args+=(--volume "$PIP_CERT:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
fi
say "buildah bud"
timeout 900 buildah bud --isolation chroot --quiet "${build_args[@]}" -t "$IMAGE" "$repo" >/dev/null

work="$(mktemp -d)"
container=""
cleanup() {
  [[ -n "$container" ]] && buildah rm "$container" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/spool" "$work/out"
chown 65532:65532 "$work/spool" "$work/out"

container="$(buildah from "$IMAGE")"
config="$(buildah inspect --format \
  '{{index .OCIv1.Config.Entrypoint 0}} {{.OCIv1.Config.User}} {{.OCIv1.Config.StopSignal}}' "$container")"
read -r entrypoint user stopsignal <<<"$config"
[[ "$user" == "65532:65532" ]] || { say "image user is '$user', want 65532:65532"; exit 1; }
[[ "$stopsignal" == "SIGTERM" ]] || { say "stop signal is '$stopsignal'"; exit 1; }

say "running '$entrypoint run' in local mode, then SIGTERM"
timeout 120 buildah run --isolation chroot --user "$user" \
  -v "$work/spool:/var/lib/sentinel-sidecar" -v "$work/out:/out" "$container" -- \
  sh -c "$entrypoint run --output-dir /out --interval 0.2 --upload-interval 1 --health-port 0 --cloud-detect false \
           --log-level warning & agent=\$!; sleep 5; kill -TERM \$agent; wait \$agent"

python3 - "$work/spool" "$work/out" <<'PY'
import gzip, json, pathlib, sys
spool, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
[segment] = sorted(spool.glob("segment-*.csv"))  # a 5 s run fills one segment
lines = segment.read_text().splitlines(keepends=True)
header, rows = lines[0], lines[1:]
chunks = sorted(out.glob("*.csv.gz"))
delivered = []
for chunk in chunks:
    text = gzip.decompress(chunk.read_bytes()).decode().splitlines(keepends=True)
    assert text[0] == header, f"{chunk.name} does not start with the header"
    delivered += text[1:]
assert delivered == rows, f"{len(delivered)} rows in chunks, {len(rows)} in the spool"
summary = json.loads((out / "run.json").read_text())
assert summary["rows"] == len(rows) and summary["chunks"] == len(chunks), summary
assert len(rows) >= 15, f"only {len(rows)} rows in 5 s at 0.2 s"
print(f"smoke: {len(rows)} rows in {len(chunks)} chunks, all delivered once", file=sys.stderr)
PY

size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
base=$(podman image inspect --format '{{.Size}}' "$BASE_IMAGE")
say "image size $((size / 1000000)) MB ($(((size - base) / 1000000)) MB on top of the base image)"
