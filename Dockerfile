# The kiln image: `docker build -t kiln .` (the manifests in deploy/kubernetes run it).
# Build stage: a release build of the `kiln` binary alone.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kiln-cli \
    && cp target/release/kiln /usr/local/bin/kiln

# Run stage: the binary on a slim Debian with its runtime libraries, as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --create-home kiln
COPY --from=build /usr/local/bin/kiln /usr/local/bin/kiln
USER 10001
WORKDIR /home/kiln
EXPOSE 8786 8787
ENTRYPOINT ["kiln"]
CMD ["scheduler"]
