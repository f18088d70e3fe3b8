# probe: a slim, non-root runtime image.
#   docker build -t probe .
#   docker run --rm probe example.com --origin 203.0.113.10
#   scheduled: mount your probes.yaml (with `store: {path: /var/lib/probe/probe.sqlite}`) and run
#   docker run -d -v $PWD/probes.yaml:/etc/probe/probes.yaml:ro -v probe-state:/var/lib/probe \
#     -e SMTP_PASSWORD probe watch -c /etc/probe/probes.yaml --log-format json
#   (`docker kill -s HUP` reloads the config; `docker stop` sends SIGTERM: probes in flight finish.)
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY data ./data
RUN cargo build --release --locked && strip target/release/probe

FROM debian:bookworm-slim
# Public roots are compiled in (webpki-roots, for sites and SMTP); ca-certificates is for tools.
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
