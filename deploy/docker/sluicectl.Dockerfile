# syntax=docker/dockerfile:1
# sluicectl on Debian 12 (bookworm): a build stage runs the repository's CMake build of this one
# target; the runtime stage is bookworm-slim with only the shared libraries it links and the
# binary, run as the unprivileged user sluice (10001:10001). Build from the repository's root:
#
#   docker build -f deploy/docker/sluicectl.Dockerfile -t sluice/sluicectl:0.1.0 .
#
# (sluicectl.Dockerfile.dockerignore keeps build trees and local state out of the context.)
# For operators: `docker run --rm -v $PWD:/home/sluice sluice/sluicectl:0.1.0 agents list`
# (SLUICE_SERVER, SLUICE_CA_FILE and SLUICE_TOKEN_FILE point it at a control plane).

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
 && cmake --build /build --target sluicectl \
 && strip --strip-debug -o /sluicectl /build/cli/sluicectl

FROM debian:bookworm-slim
# The packages of the shared libraries the binary names (objdump -p: NEEDED; apt brings what they
# need).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 libssl3 libyaml-cpp0.7 \
      libzstd1 libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid sluice --home-dir /home/sluice --no-create-home \
      --shell /usr/sbin/nologin sluice \
 && install -d -o sluice -g sluice -m 0700 /home/sluice
COPY --from=build /sluicectl /usr/local/bin/sluicectl
USER 10001:10001
WORKDIR /home/sluice
ENTRYPOINT ["/usr/local/bin/sluicectl"]
