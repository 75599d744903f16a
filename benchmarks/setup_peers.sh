#!/usr/bin/env bash
# Make the peers' environment for bench_primitives.py and bench_concurrency.py: llama-cpp-python 0.3.36
# from its sdist, with its `[server]` extra (fastapi, uvicorn, sse-starlette, …), in its own venv. Its
# llama.cpp is the identical commit (b11312) we ship, so it is built without its native part
# (LLAMA_BUILD=OFF) and loads our libllama through LLAMA_CPP_LIB_PATH: the comparison is the Python layer
# (binding, HTTP server) over one and the same native library.
#   bash benchmarks/setup_peers.sh [VENV_DIR]
set -euo pipefail
venv="${1:-.bench/lcp}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check numpy
CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" "$venv/bin/pip" install -q --disable-pip-version-check \
    --no-binary llama-cpp-python "llama-cpp-python[server]==0.3.36"
echo "llama-cpp-python ready in $venv; run with LLAMA_CPP_LIB_PATH=<llama_serve>/lib"
