# syntax=docker/dockerfile:1
# The Vinz Clortho node image: `docker build -t vinzclortho .` at the
# repository root (README: "Running it in containers and on Kubernetes").
# Checked by scripts/check-deploy (hadolint).

# Build stage: Rust on Debian bookworm, as the runtime below, so the binary
# links against the same glibc and libstdc++. RocksDB is C++ (g++, in this
# image) and its Rust bindings are generated with libclang at build time.
FROM rust:1.95-bookworm AS build
# Unpinned on purpose: bookworm's security updates are the versions wanted.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the crates and RocksDB's objects between builds
# (a cold build is 15 to 27 minutes on 2 cores); the binary is copied out of
# the cache so the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 0755 target/release/vinzclortho /usr/local/bin/vinzclortho

# Runtime stage. curl is for the health probes (vinzclortho-probe); the
# binary's other libraries (libstdc++, libgcc) are in the slim image already.
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid and gid: Kubernetes' runAsUser, runAsGroup and fsGroup
# (deploy/kubernetes) and the owner of the data volume name this user.
RUN groupadd --system --gid 10001 vinzclortho \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/vinzclortho --no-create-home \
        --shell /usr/sbin/nologin vinzclortho \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/vinzclortho
COPY --from=build /usr/local/bin/vinzclortho /usr/local/bin/vinzclortho
COPY deploy/docker/vinzclortho-probe /usr/local/bin/vinzclortho-probe
# The data directory is a subdirectory of the volume: a fresh filesystem's
# root may hold lost+found, and the node creates the directory itself.
ENV VINZCLORTHO_DATA_DIR=/var/lib/vinzclortho/data
USER 10001:10001
WORKDIR /var/lib/vinzclortho
VOLUME ["/var/lib/vinzclortho"]
# HTTP (client API, /ping, /metrics) and the cluster port (gRPC, HTTP + 1000).
EXPOSE 8880 9880
# /ping on VINZCLORTHO_ADDRESS (HTTPS when VINZCLORTHO_HTTP_TLS_CERT is set):
# give the node its addresses in the environment, not as flags, so the probe
# finds them. The start period covers opening RocksDB and joining.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["vinzclortho-probe", "http"]
ENTRYPOINT ["vinzclortho"]
CMD ["serve"]
