# syntax=docker/dockerfile:1
# sluice-controlplane on Debian 12 (bookworm): a build stage runs the repository's CMake build of this one
# target; the runtime stage is bookworm-slim with only the shared libraries it links and the
# binary, run as the unprivileged user sluice (10001:10001). Build from the repository's root:
#
#   docker build -f deploy/docker/controlplane.Dockerfile -t sluice/sluice-controlplane:0.1.0 .
#
# (controlplane.Dockerfile.dockerignore keeps build trees and local state out of the context.)
# The Helm chart (deploy/helm/sluice) runs this image with its own arguments; docs/deploy.md.

FROM debian:bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config ca-certificates \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev \
      libssl-dev libsodium-dev libsqlite3-dev zlib1g-dev libzstd-dev libisal-dev \
      libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libasio-dev \
      libpg-query-dev libre2-dev libgmime-3.0-dev libhttp-parser-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DSLUICE_BUILD_TESTS=OFF -DSLUICE_BUILD_BENCH=OFF \
 && cmake --build /build --target sluice-controlplane \
 && strip --strip-debug -o /sluice-controlplane /build/controlplane/sluice-controlplane

FROM debian:bookworm-slim
# The packages of the shared libraries the binary names (objdump -p: NEEDED; apt brings what they
# need), and CA certificates for the HTTPS it dials (Issuers' JWKS, webhooks, cloud APIs).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 libssl3 libsqlite3-0 \
      libzstd1 libisal2 libyaml-cpp0.7 libcpp-httplib0.11 libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid sluice --home-dir /var/lib/sluice --no-create-home \
      --shell /usr/sbin/nologin sluice \
 && install -d -o sluice -g sluice -m 0700 /var/lib/sluice
COPY --from=build /sluice-controlplane /usr/local/bin/sluice-controlplane
USER 10001:10001
WORKDIR /var/lib/sluice
EXPOSE 7443 7080
ENTRYPOINT ["/usr/local/bin/sluice-controlplane"]
CMD ["--data-dir=/var/lib/sluice", "--grpc-listen=0.0.0.0:7443", "--http-listen=0.0.0.0:7080"]
