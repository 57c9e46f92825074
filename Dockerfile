# syntax=docker/dockerfile:1
# The container image of the service (README, "Deploy"): built with Rust's toolchain image,
# run on Debian slim (the build stage's Debian, for its glibc) as a user of its own, data in
# the volume /data, listening on 8080 with authentication on (a first admin key from
# EVENTIDE_BOOTSTRAP_KEY or EVENTIDE_BOOTSTRAP_KEY_FILE).
#
#   docker build --build-arg EVENTIDE_GIT_COMMIT=$(git rev-parse HEAD) -t eventide .
#
# deploy/check-image-steps.sh runs these steps outside Docker (this file's own RUN, ENV,
# USER, HEALTHCHECK and CMD lines) and checks the server answers; the image itself has not
# been built on the machine this was written on (it has no Docker engine).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# The commit `eventide --version` names: the context has no .git (.dockerignore), so build.rs
# takes it from this variable (every ARG is one for RUN); "unknown" when not given.
ARG EVENTIDE_GIT_COMMIT=unknown
# --locked: exactly the dependencies of Cargo.lock. The caches keep the downloaded crates and
# the build between builds of the image (BuildKit); neither ends up in the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_TARGET_DIR=/src/target cargo install --locked --path . --root /usr/local

FROM debian:${DEBIAN_RELEASE}-slim
ARG EVENTIDE_GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="eventide" \
      org.opencontainers.image.description="Real-time event ingestion and analytics" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.revision="${EVENTIDE_GIT_COMMIT}"
# A system user of its own (no login, no home but its data), owning only /data. Its uid is
# fixed so that volumes and `USER` (numeric, which Kubernetes' runAsNonRoot can check) agree.
RUN groupadd --system --gid 10001 eventide \
    && useradd --system --uid 10001 --gid eventide --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin eventide \
    && mkdir /data && chown eventide:eventide /data && chmod 0700 /data
COPY --from=build /usr/local/bin/eventide /usr/local/bin/eventide
# Beyond loopback a server needs an API key: give the first one with EVENTIDE_BOOTSTRAP_KEY
# (or a mounted file named by EVENTIDE_BOOTSTRAP_KEY_FILE), or it refuses to start.
ENV EVENTIDE_ADDR=0.0.0.0:8080 \
    EVENTIDE_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080
USER 10001:10001
WORKDIR /data
# `eventide health` asks the server EVENTIDE_ADDR names (here http://127.0.0.1:8080/health):
# exit 0 on 200, 1 on anything else, without any shell tool in the image. Orchestrators that
# route traffic should probe `eventide health --ready` (or GET /health/ready) as well.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["eventide", "health"]
# SIGTERM (docker stop) finishes the requests in flight: give it more than Docker's default
# 10 s when stopping (`docker stop -t 30`, compose's stop_grace_period).
ENTRYPOINT ["eventide"]
CMD ["serve"]
