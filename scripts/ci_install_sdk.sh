#!/usr/bin/env bash
# Toolchain of one GPU add-on, inside cibuildwheel's manylinux_2_28 (AlmaLinux 8) container.
# Used by .github/workflows/wheels.yml (Windows gets the SDKs from setup actions there). Not run here as a
# whole (no container engine); the CUDA 13 part is scripts/cuda_toolkit_from_wheels.sh, which is.
#   bash scripts/ci_install_sdk.sh vulkan|cuda12|cuda13
set -euo pipefail
case "$1" in
    vulkan) dnf install -y epel-release && dnf install -y vulkan-headers vulkan-loader-devel glslc ;;
    cuda12) test -x /project/.cuda-toolkit/bin/nvcc ;;  # copied in by the workflow (no compiler wheel for 12)
    # The same toolkit-from-wheels as scripts/build_cuda_addon.sh builds with here; CUDAToolkit_ROOT and CUDACXX
    # point at /opt/cuda-wheels/toolkit (wheels.yml).
    cuda13) PYTHON=/opt/python/cp312-cp312/bin/python bash "$(dirname "$0")/cuda_toolkit_from_wheels.sh" /opt/cuda-wheels ;;
    *) echo "unknown add-on: $1" >&2; exit 2 ;;
esac
