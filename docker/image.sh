#!/usr/bin/env bash
# `make image`: builds the Dockerfile as chunkd:<version> and chunkd:latest without any registry.
#
# With a running docker engine it is a plain `docker build`. Otherwise podman (or buildah alone) builds it, after
# docker/base-image.sh has made the base image debian:bookworm-slim locally with debootstrap when it is missing.
# The machine quirks (runc, ulimits, host network for apt during the build) live here and in docker/engine.sh.
#
#   docker/image.sh [VERSION]     VERSION defaults to the Makefile's
#   CHUNKD_ENGINE=docker|podman|buildah to force an engine
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=docker/engine.sh
. docker/engine.sh
chunkd_pick_engine

VERSION=${1:-$(make -s --no-print-directory version)}
REVISION=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
IMAGE=chunkd
start=$(date +%s)

if [ "$ENGINE" = docker ] && docker image inspect docker.io/library/debian:bookworm-slim >/dev/null 2>&1; then
    :  # docker pulls the base itself when it can; a local one (from base-image.sh) is used as it is
elif [ "$ENGINE" != docker ]; then
    docker/base-image.sh
fi

args=(--build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" -t "$IMAGE:$VERSION" -t "$IMAGE:latest" -f Dockerfile .)
echo "image $IMAGE:$VERSION: building with $ENGINE"
case $ENGINE in
    docker)  docker build "${args[@]}" ;;
    # No registry: never pull (the base is local). Host network: apt in the RUN steps reaches Debian's archive
    # without a bridge or firewall rules.
    podman)  podman build --pull=never --network host --layers "${args[@]}" ;;
    buildah) buildah bud --pull-never --isolation chroot --network host --layers "${args[@]}" ;;
    *) echo "image.sh: unknown engine $ENGINE" >&2; exit 2 ;;
esac

case $ENGINE in
    buildah) size=$(buildah images --noheading --format '{{.Size}}' "$IMAGE:$VERSION") ;;
    *) size="$(( $("$ENGINE" image inspect -f '{{.Size}}' "$IMAGE:$VERSION") / 1000000 )) MB" ;;
esac
echo "image $IMAGE:$VERSION (and :latest): $size, built in $(( $(date +%s) - start )) s"
