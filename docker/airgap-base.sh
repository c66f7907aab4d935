#!/usr/bin/env bash
# Make a local base image for air-gapped builds: a Debian bookworm root filesystem from the apt archive
# (debootstrap), with Python 3.11 + venv and this machine's local CA certificates (sites that reach the
# package index through an intercepting proxy need them), imported into the engine with `docker import`.
# No image registry is contacted. Then build every image on it:
#
#   docker/airgap-base.sh [IMAGE] [MIRROR]        # default IMAGE vrft-airgap-base:bookworm
#   python3 docker/build.py --no-push --base-image vrft-airgap-base:bookworm ...
#
# Needs root (debootstrap, chroot), debootstrap and a running engine (DOCKER_HOST honoured).
set -euo pipefail

image=${1:-vrft-airgap-base:bookworm}
mirror=${2:-${DEBIAN_MIRROR:-http://deb.debian.org/debian}}
suite=bookworm  # Python 3.11, the version pyproject and the other images use
local_certs=${LOCAL_CA_DIR:-/usr/local/share/ca-certificates}

command -v debootstrap >/dev/null || { echo "airgap-base.sh: debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }
command -v docker >/dev/null || { echo "airgap-base.sh: docker CLI missing (apt-get install docker.io)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "airgap-base.sh: debootstrap and chroot need root" >&2; exit 1; }
docker version >/dev/null 2>&1 || { echo "airgap-base.sh: no Docker engine answers (start one: docker/engine.sh start)" >&2; exit 1; }

rootfs=$(mktemp -d /tmp/vrft-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$suite" "$rootfs" "$mirror"

# The machine's local CA additions, trusted inside the image as on the host.
if compgen -G "${local_certs}/*.crt" >/dev/null; then
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp "${local_certs}"/*.crt "$rootfs/usr/local/share/ca-certificates/"
fi
chroot "$rootfs" update-ca-certificates >/dev/null
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb

tar -C "$rootfs" -c . | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$image"
echo "airgap-base.sh: built $image"
