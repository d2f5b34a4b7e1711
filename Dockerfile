# hookline's services in one small runtime image: hookline-producer, hookline-renderer,
# hookline-dispatcher and the hookline CLI (which also serves the healthchecks). The
# compose file picks the service with `command:`.
#
#   docker build -t hookline .                       compiles the workspace (stage `build`)
#   docker build --build-arg BINARIES=prebuilt ...    packages release binaries built on
#                                                     the host, put in ./dist/ first (ops/compose-test)
#
# The base images are build arguments so that a registry mirror, a pinned digest or a
# locally built Debian image can stand in for the public ones.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG BINARIES=build

FROM ${RUST_IMAGE} AS build
# librdkafka is compiled from source by rdkafka-sys (make, a C compiler, zlib, and
# OpenSSL for TLS and SASL/SCRAM to Kafka).
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake zlib1g-dev libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
    && mkdir /out \
    && cp target/release/hookline-producer target/release/hookline-renderer \
        target/release/hookline-dispatcher target/release/hookline /out/

# Binaries built on the host (the same Debian release as RUNTIME_IMAGE): ./dist/.
FROM scratch AS prebuilt
COPY dist/hookline-producer dist/hookline-renderer dist/hookline-dispatcher dist/hookline /out/

# Picks one of the two stages above; the other is not built.
FROM ${BINARIES} AS binaries

FROM ${RUNTIME_IMAGE} AS runtime
# CA certificates for HTTPS webhooks (rustls verifies against the system's roots);
# OpenSSL for librdkafka's TLS and SASL/SCRAM to Kafka; zlib and glibc are in the base
# image already. One unprivileged user, no shell login.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin hookline
COPY --from=binaries /out/ /usr/local/bin/
USER 10001:10001
# The API (producer) and the admin listener (health, metrics) listen on every
# interface inside the container; the compose file publishes them on loopback only.
ENV HOOKLINE_API_ADDR=0.0.0.0:8080 \
    HOOKLINE_ADMIN_ADDR=0.0.0.0:8081 \
    RUST_LOG=info
EXPOSE 8080 8081
CMD ["hookline", "--help"]
