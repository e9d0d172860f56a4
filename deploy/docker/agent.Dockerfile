# syntax=docker/dockerfile:1
# sluice-agent on Debian 12 (bookworm): a build stage runs the repository's CMake build of this one
# target; the runtime stage is bookworm-slim with only the shared libraries it links and the
# binary, run as the unprivileged user sluice (10001:10001). Build from the repository's root:
#
#   docker build -f deploy/docker/agent.Dockerfile -t sluice/sluice-agent:0.1.0 .
#
# (agent.Dockerfile.dockerignore keeps build trees and local state out of the context.)
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
 && cmake --build /build --target sluice-agent \
 && strip --strip-debug -o /sluice-agent /build/agent/sluice-agent

FROM debian:bookworm-slim
# The packages of the shared libraries the binary names (objdump -p: NEEDED; apt brings what they
# need), and CA certificates for the HTTPS it dials (Issuers' JWKS, webhooks, cloud APIs).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 libssl3 libsodium23 \
      libisal2 libcpp-httplib0.11 libpg-query1504.0 libre2-9 libgmime-3.0-0 libglib2.0-0 \
      libhttp-parser2.9 libzstd1 libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid sluice --home-dir /var/lib/sluice-agent --no-create-home \
      --shell /usr/sbin/nologin sluice \
 && install -d -o sluice -g sluice -m 0700 /var/lib/sluice-agent
COPY --from=build /sluice-agent /usr/local/bin/sluice-agent
USER 10001:10001
WORKDIR /var/lib/sluice-agent
EXPOSE 6432 3307 8443 7081
ENTRYPOINT ["/usr/local/bin/sluice-agent"]
