#!/usr/bin/env bash
# Toolchain of one GPU add-on, inside cibuildwheel's manylinux_2_28 (AlmaLinux 8) container.
# Used by .github/workflows/wheels.yml (Windows gets the SDKs from setup actions there). Not run here:
# this project's build machine has no container engine; its own Vulkan build uses Debian's packages.
#   bash scripts/ci_install_sdk.sh vulkan|cuda12|cuda13
set -euo pipefail
# CUDA from NVIDIA's wheels, by package name through pip's configured index (compiler, runtime, cuBLAS headers);
# CUDACXX points CMake at that nvcc. Unverified here (no container engine).
cuda_from_wheels() {  # $1: a version spec; CUDA 12's wheels carry a -cu12 suffix, CUDA 13's none
    python3 -m pip install "nvidia-cuda-nvcc$1" "nvidia-cuda-runtime$1" "nvidia-cublas$1"
}
case "$1" in
    vulkan) dnf install -y epel-release && dnf install -y vulkan-headers vulkan-loader-devel glslc ;;
    cuda12) cuda_from_wheels "-cu12>=12.8,<13" ;;
    cuda13) cuda_from_wheels ">=13,<14" ;;
    *) echo "unknown add-on: $1" >&2; exit 2 ;;
esac
