# Multi-stage build of the dual-indexer binary into a small runtime image with a non-root user.
FROM rust:1.85-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config zlib1g-dev libssl-dev && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY schemas ./schemas
COPY benches ./benches
RUN cargo build --release --locked --bin dual-indexer

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates zlib1g libssl3 && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home indexer
COPY --from=build /src/target/release/dual-indexer /usr/local/bin/dual-indexer
USER 10001
ENTRYPOINT ["/usr/local/bin/dual-indexer"]
CMD ["--help"]
