#!/usr/bin/env bash
# make check-image: the image and the dev manifests under podman (tests/image/run.py says what is tested).
# Expects the image chunkd:<version> (make image). Sources docker/engine.sh for the engine and podman's quirks.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=docker/engine.sh
. docker/engine.sh
chunkd_pick_engine
if [ "$ENGINE" = buildah ]; then
    echo "check-image needs podman or docker to run containers" >&2
    exit 1
fi
version=$(make -s --no-print-directory version)
exec python3 tests/image/run.py --engine "$ENGINE" --image "chunkd:$version" "$@"
