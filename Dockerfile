# probe: a slim, non-root runtime image.
#   docker build -t probe .
#   docker run --rm probe example.com --origin 203.0.113.10
#   (scheduled mode, once it lands: mount probes.yaml at /etc/probe/probes.yaml, state at /var/lib/probe)
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY data ./data
RUN cargo build --release --locked && strip target/release/probe

FROM debian:bookworm-slim
# Public roots are compiled in (webpki-roots); ca-certificates is for tools and future SMTP trust.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/probe --create-home --shell /usr/sbin/nologin probe
COPY --from=build /src/target/release/probe /usr/local/bin/probe
COPY probes.yaml /etc/probe/probes.yaml
USER probe
WORKDIR /var/lib/probe
VOLUME ["/var/lib/probe"]
ENTRYPOINT ["/usr/local/bin/probe"]
CMD ["--help"]
