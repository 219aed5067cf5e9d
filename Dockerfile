# One image for every callproof binary; docker-compose.yml picks the command.
# The toolchain is the workspace's `rust-version`: the oldest that builds every locked dependency.
FROM rust:1.90-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev libsasl2-dev \
      zlib1g-dev libzstd-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
      -p callproof-ingress -p callproof-processor -p callproof-indexer -p callproof-evidence \
      -p callproof-tlog -p callproof-demo \
 && mkdir /out \
 && cp target/release/callproof-* /out/ \
 && rm -f /out/*.d

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libssl3 libsasl2-2 libzstd1 \
      libcurl4 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/callproof callproof \
 && mkdir -p /var/lib/callproof/keys /var/lib/callproof/verifier /var/lib/callproof/demo \
      /var/lib/callproof/index /etc/callproof \
 && chown -R callproof /var/lib/callproof
COPY --from=build /out/ /usr/local/bin/
USER callproof
WORKDIR /var/lib/callproof
