#!/usr/bin/env bash
# A CUDA toolkit for building the CUDA add-on, made only of NVIDIA's wheels fetched by package name (no
# vendor installer, no container): compiler, runtime, cuBLAS. Lays them out as one toolkit root and prints
# it; the caller sets CUDAToolkit_ROOT to it and CUDACXX to its bin/nvcc.
#   bash scripts/cuda_toolkit_from_wheels.sh PREFIX  -> prints PREFIX/toolkit
# CUDA 13 only: CUDA 12's compiler wheel (nvidia-cuda-nvcc-cu12, 12.9) holds ptxas and libdevice but no nvcc,
# so the CUDA 12 add-on is built with NVIDIA's toolkit installer (.github/workflows/wheels.yml).
# Used by scripts/build_cuda_addon.sh (here) and scripts/ci_install_sdk.sh (cibuildwheel's Linux container).
set -euo pipefail
prefix=$(realpath -m "${1:?usage: $0 PREFIX}")
python=${PYTHON:-python3}
# CUDA 13's wheels share one nvidia/cu13 tree: bin (nvcc, ptxas), include, lib, nvvm.
packages=(nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cublas nvidia-cuda-cccl)
site=$prefix/site root=$prefix/toolkit
if [ ! -x "$root/bin/nvcc" ]; then
    [ -d "$site/nvidia/cu13" ] ||
        "$python" -m pip install -q --disable-pip-version-check --target "$site" "${packages[@]/%/>=13,<14}"
    rm -rf "$root"; mkdir -p "$root/lib/stubs"
    # The toolkit root: the wheels' tree, linked entry by entry (the wheels are left untouched).
    for dir in bin include lib nvvm; do
        mkdir -p "$root/$dir"
        for entry in "$site/nvidia/cu13/$dir"/*; do ln -sfn "$entry" "$root/$dir/"; done
    done
    # Wheels ship versioned sonames only; the linker looks for the plain names.
    for library in cudart cublas cublasLt; do
        versioned=$(ls "$root/lib/lib$library.so."* | head -n1)
        ln -sfn "$versioned" "$root/lib/lib$library.so"
    done
    # libcuda belongs to the driver and has no wheel. Like the toolkit's own stub, ours only lets a library link:
    # it defines every driver function cuda.h declares (names after its _v2 macros), so the library records
    # DT_NEEDED libcuda.so.1 and gets the real functions from the driver at load time.
    cc -E -P "$root/include/cuda.h" | grep -oE '\bcu[A-Z][A-Za-z0-9_]*\s*\(' | tr -d ' (' | sort -u \
        | sed 's/.*/void &(void) {}/' | cc -x c -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" -
fi
echo "$root"
