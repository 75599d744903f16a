#!/usr/bin/env bash
# Toolchain of one GPU add-on, inside cibuildwheel's manylinux_2_28 (AlmaLinux 8) container.
# Used by .github/workflows/wheels.yml (Windows gets the SDKs from setup actions there). Not run here:
# this project's build machine has no container engine; its own Vulkan build uses Debian's packages.
#   bash scripts/ci_install_sdk.sh vulkan|cuda12|cuda13
set -euo pipefail
arch=$(uname -m | sed 's/aarch64/sbsa/')
cuda_repo() {
    dnf config-manager --add-repo \
        "https://developer.download.nvidia.com/compute/cuda/repos/rhel8/${arch}/cuda-rhel8.repo"
}
case "$1" in
    vulkan) dnf install -y epel-release && dnf install -y vulkan-headers vulkan-loader-devel glslc ;;
    cuda12) cuda_repo && dnf install -y cuda-nvcc-12-8 cuda-cudart-devel-12-8 libcublas-devel-12-8 ;;
    cuda13) cuda_repo && dnf install -y cuda-nvcc-13-0 cuda-cudart-devel-13-0 libcublas-devel-13-0 ;;
    *) echo "unknown add-on: $1" >&2; exit 2 ;;
esac
