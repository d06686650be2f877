#!/usr/bin/env bash
# Makes the Dockerfile's base image, docker.io/library/debian:bookworm-slim, without a registry: debootstrap
# --variant=minbase bookworm from Debian's archive, slimmed the way the official image is (no docs, man pages or
# locales; apt lists and caches cleaned), and imported under that name so the Dockerfile stays standard.
#
#   docker/base-image.sh [--force]      (root; needs debootstrap; sources docker/engine.sh for the engine)
#   DEBIAN_MIRROR=http://deb.debian.org/debian  DEBIAN_SECURITY=http://deb.debian.org/debian-security
#
# Skips the work when the image is already there, unless --force.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=docker/engine.sh
. docker/engine.sh
chunkd_pick_engine

BASE=docker.io/library/debian:bookworm-slim
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}

image_exists() {
    case $ENGINE in
        docker) docker image inspect "$1" >/dev/null 2>&1 ;;
        *) buildah inspect --type image "$1" >/dev/null 2>&1 ;;
    esac
}

if [ "${1:-}" != --force ] && image_exists "$BASE"; then
    echo "base image $BASE: present"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "base-image.sh: debootstrap needs root" >&2
    exit 1
fi

start=$(date +%s)
rootfs=$(mktemp -d /var/tmp/chunkd-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "base image $BASE: debootstrap --variant=minbase bookworm from $MIRROR"
debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" > "$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"

# Sources as in the official image: the release, its updates and security.
rm -f "$rootfs/etc/apt/sources.list"
cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

# Keep later installs slim too (what the official image's /etc/dpkg/dpkg.cfg.d and apt.conf.d files do).
cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
DPKG
cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
cat > "$rootfs/etc/apt/apt.conf.d/docker-no-languages" <<'APT'
Acquire::Languages "none";
APT
cat > "$rootfs/etc/apt/apt.conf.d/docker-autoremove-suggests" <<'APT'
Apt::AutoRemove::SuggestsImportant "false";
APT

find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/lintian "$rootfs"/usr/share/linda
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
       "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
: > "$rootfs/etc/machine-id"

case $ENGINE in
    docker)
        tar -C "$rootfs" --numeric-owner -c . | docker import --change 'CMD ["bash"]' - "$BASE" >/dev/null ;;
    podman)
        tar -C "$rootfs" --numeric-owner -c . | podman import -q --change 'CMD ["bash"]' - "$BASE" >/dev/null ;;
    buildah)
        ctr=$(buildah from scratch)
        mnt=$(buildah mount "$ctr")
        tar -C "$rootfs" --numeric-owner -c . | tar -C "$mnt" --numeric-owner -x
        buildah umount "$ctr" >/dev/null
        buildah config --cmd bash "$ctr"
        buildah commit -q "$ctr" "$BASE" >/dev/null
        buildah rm "$ctr" >/dev/null ;;
esac
echo "base image $BASE: imported ($(( $(date +%s) - start )) s)"
