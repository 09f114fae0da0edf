#!/bin/sh
# Build the Driftless container image from Debian packages with Debian's tools, and push it:
#
#   deploy/image/build.sh [--wheel FILE] [--out DIR] [--push REGISTRY[/PREFIX]] [--dest-creds USER:PASS-FILE]
#
# The image is driftless/driftless:VERSION (VERSION from the wheel), the name every file in
# deploy/kubernetes uses (kustomization.yaml points it at your registry). As root, with mmdebstrap,
# umoci and skopeo (apt-get install mmdebstrap umoci skopeo):
#   1. a Debian bookworm root filesystem (mmdebstrap, minbase, with python3 and ca-certificates);
#   2. the wheel in its own virtual environment, /opt/driftless (pip in a chroot of that root, with
#      this machine's pip configuration); a user 10001 (driftless) owns /var/lib/driftless;
#   3. an OCI image layout (umoci: one layer, entrypoint /opt/driftless/bin/driftless, user 10001)
#      in --out DIR (default ./driftless-image), tag VERSION;
#   4. with --push: skopeo copies it to REGISTRY/driftless/driftless:VERSION (plain HTTP for a
#      127.0.0.1 or localhost registry, HTTPS otherwise).
# The wheel is built from this checkout (`pip wheel --no-deps`) when --wheel is not given.
# tests/test_install.py builds it and pushes it to a Driftless registry.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$(dirname "$here")")
wheel=""
out="$PWD/driftless-image"
push=""
suite=${DRIFTLESS_IMAGE_SUITE:-bookworm}
while [ $# -gt 0 ]; do
    case "$1" in
        --wheel) wheel=${2:?}; shift 2 ;;
        --out) out=${2:?}; shift 2 ;;
        --push) push=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "error: building the root filesystem needs root (mmdebstrap, chroot)" >&2; exit 1; }
for tool in mmdebstrap umoci chroot; do
    command -v $tool >/dev/null || { echo "error: $tool not found: apt-get install mmdebstrap umoci" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "$wheel" ]; then
    python3 -m pip wheel -q --no-deps -w "$work" "$top" >&2
    wheel=$(ls "$work"/driftless-*.whl)
fi
version=$(basename "$wheel" | cut -d- -f2)
rootfs="$work/rootfs"

# haproxy: the host's native data path (docs/host.md "Data path")
packages=python3,python3-venv,ca-certificates,git,haproxy
# the Debian base is cached (keyed by suite and packages, rebuilt after a week): only the first build
# of a machine pays for mmdebstrap
cache=${XDG_CACHE_HOME:-$HOME/.cache}/driftless/image
base="$cache/base-$suite-$(echo "$packages" | sha256sum | cut -c1-12).tar"
if [ ! -f "$base" ] || [ -n "$(find "$base" -mtime +7)" ]; then
    echo "image: Debian $suite root filesystem (mmdebstrap, minbase; cached in $cache)" >&2
    mkdir -p "$cache"
    mmdebstrap --quiet --variant=minbase --include="$packages" \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --format=tar "$suite" "$base.part" >&2
    mv "$base.part" "$base"
fi
mkdir "$rootfs"
tar -xf "$base" -C "$rootfs"

echo "image: driftless $version into /opt/driftless" >&2
# the wheel and its dependencies are fetched here, with this machine's pip and its configuration,
# and installed in the root without a network
python3 -m pip download -q -d "$rootfs/tmp/wheels" "$wheel" >&2
chroot "$rootfs" python3 -m venv /opt/driftless
chroot "$rootfs" /opt/driftless/bin/pip install -q --no-cache-dir --no-index --find-links /tmp/wheels \
    "/tmp/wheels/$(basename "$wheel")" >&2
chroot "$rootfs" /opt/driftless/bin/driftless --help >/dev/null
chroot "$rootfs" useradd --uid 10001 --user-group --home-dir /var/lib/driftless --create-home \
    --shell /usr/sbin/nologin driftless
rm -rf "$rootfs/tmp/wheels" "$rootfs/var/cache/apt/"* "$rootfs/var/lib/apt/lists/"*
find "$rootfs/opt/driftless" -name __pycache__ -prune -exec rm -rf {} +

echo "image: OCI layout $out:$version" >&2
rm -rf "$out"
umoci init --layout "$out"
umoci new --image "$out:$version"
umoci insert --image "$out:$version" "$rootfs" / >&2
umoci config --image "$out:$version" --author driftless \
    --config.entrypoint /opt/driftless/bin/driftless --config.cmd --help \
    --config.user 10001:10001 --config.workingdir /var/lib/driftless \
    --config.env PATH=/opt/driftless/bin:/usr/local/bin:/usr/bin:/bin \
    --config.label org.opencontainers.image.title=driftless \
    --config.label "org.opencontainers.image.version=$version" \
    --config.label org.opencontainers.image.source=https://github.com/driftless/driftless
umoci gc --layout "$out"

if [ -n "$push" ]; then
    dest="docker://$push/driftless/driftless:$version"
    case "$push" in
        127.0.0.1*|localhost*) tls=--dest-tls-verify=false ;;
        *) tls=--dest-tls-verify=true ;;
    esac
    echo "image: push to $dest" >&2
    # credentials, if the registry wants them: skopeo's own auth file (skopeo login), never a command line
    skopeo copy --quiet $tls "oci:$out:$version" "$dest" >&2
fi
echo "driftless/driftless:$version"
