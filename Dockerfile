# socket-hub container image.
#
#   docker build -t socket-hub .
#   docker run -p 8080:8080 -e ORDERS_TOKEN=... \
#     -v "$PWD/hub.toml:/etc/socket-hub/hub.toml:ro" \
#     -e HUB_CONFIG=/etc/socket-hub/hub.toml socket-hub
#
# No token is baked in: HUB_ENV=production refuses the demo token, so give
# your services in a mounted config file named by HUB_CONFIG (or HUB__...
# env vars), with tokens from token_env or token_file.

# ---- build --------------------------------------------------------------------
FROM rust:1-bookworm AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /build

# Dependencies first, against stub sources for every target Cargo.toml
# declares, so that this layer is rebuilt only when Cargo.toml, Cargo.lock or
# vendor/ change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
COPY vendor ./vendor
RUN mkdir -p src \
 && grep -oE '^path *= *"[^"]+[.]rs"' Cargo.toml | cut -d'"' -f2 \
    | while read -r f; do mkdir -p "$(dirname "$f")" && echo 'fn main() {}' > "$f"; done \
 && cargo build --release --locked --bin socket-hub \
 && rm -rf src target/release/socket-hub target/release/deps/socket_hub-* \
           target/release/deps/libsocket_hub-* target/release/.fingerprint/socket-hub-*

# Then the real source.
COPY settings ./settings
COPY src ./src
RUN cargo build --release --locked --bin socket-hub \
 && strip target/release/socket-hub

# ---- run ----------------------------------------------------------------------
FROM debian:bookworm-slim

RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin hub

COPY --from=builder /build/target/release/socket-hub /usr/local/bin/socket-hub
WORKDIR /app
COPY settings ./settings

ENV HUB_ENV=production \
    RUST_LOG=info
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM

# The binary checks itself: GET http://127.0.0.1:<server.port>/healthz (no curl
# in the image). It reads the same settings files, HUB_CONFIG and HUB__* env
# vars as the server, but not a --config given as CMD: name your config file
# with HUB_CONFIG instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["socket-hub", "healthcheck"]

ENTRYPOINT ["socket-hub"]
