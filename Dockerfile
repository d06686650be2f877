# chunkd container image: `docker build .` (or `make image`, which also builds without a registry; docker/README.md).
#
# Stage 1 builds chunkd with Debian's -dev packages, runs the unit tests and strips the binary. Stage 2 holds only
# the runtime libraries, CA certificates and the binary, and runs it as a fixed non-root user. chunkd is PID 1: it
# takes SIGTERM and SIGINT itself (drain, then exit 0), so there is no shell or init wrapper.

FROM debian:bookworm-slim AS build
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      gcc libc6-dev make pkg-config binutils \
      libhiredis-dev libjansson-dev libcurl4-openssl-dev libmicrohttpd-dev libcmocka-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY src/ src/
COPY tests/unit/ tests/unit/
COPY tests/mockapi/mockapi.mk tests/mockapi/
RUN make -j"$(nproc)" unit build/chunkd \
 && strip --strip-all -o /chunkd build/chunkd \
 && /chunkd --version

FROM debian:bookworm-slim
# Runtime libraries and CA certificates; user chunkd (10001); /data owned by it, for `chunkd collect --out /data` on
# a mounted volume (docker/compose.yaml).
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libhiredis0.14 libjansson4 libcurl4 libmicrohttpd12 libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && echo 'chunkd:x:10001:10001:chunkd:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'chunkd:x:10001:' >> /etc/group \
 && install -d -o 10001 -g 10001 -m 0750 /data
COPY --from=build /chunkd /usr/local/bin/chunkd
USER 10001:10001
# glibc gives each thread its own malloc arena; a handful is enough for the event loops (the Deployment sets it too).
ENV MALLOC_ARENA_MAX=2
EXPOSE 8080
ENTRYPOINT ["chunkd"]
CMD ["worker"]
# Last, so a new revision does not invalidate the cached layers above.
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="chunkd" \
      org.opencontainers.image.description="Worker service: runs chunks of work items from a Redis list, writes results to a Redis stream" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
