# Builder images for edgepack; pick one with `docker build --target NAME .`
#
#   cross           Debian with the aarch64 cross toolchain, CMake, qemu-user and the runtime's
#                   header-only libraries (nlohmann/json, CLI11): cross-builds the generated C++
#                   runtime for aarch64 targets and runs its tests under emulation.
#   trtllm-builder  TensorRT-LLM's release image (GPU hosts only): quantize and trtllm-build.
#
# edgepack drives these through the engine's API (the Docker SDK; podman through its
# Docker-compatible socket) and builds `cross` itself on first use, with host networking, labelled
# with this file's sha256 so that an edit here rebuilds it. Nothing here is specific to a model.
#
# No registry reachable (offline hosts, CI sandboxes)? Make the base image of `cross` locally:
#   debootstrap --variant=minbase bookworm ROOTFS http://deb.debian.org/debian
#   tar -C ROOTFS -c . | docker import - debian:bookworm-slim
ARG DEBIAN_RELEASE=bookworm
ARG TRTLLM_IMAGE=nvcr.io/nvidia/tensorrt-llm/release:1.2.0

FROM debian:${DEBIAN_RELEASE}-slim AS cross
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        g++-aarch64-linux-gnu cmake make ninja-build qemu-user python3 ca-certificates \
        nlohmann-json3-dev libcli11-dev \
    && rm -rf /var/lib/apt/lists/*
ENV QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
WORKDIR /src

FROM ${TRTLLM_IMAGE} AS trtllm-builder
WORKDIR /work
