#!/usr/bin/env bash
# Build the wheel (dev profile unless LLAMA_SERVE_PROFILE says otherwise), install it into a fresh
# virtual environment (not editable), and run the test suite against that install.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
export LLAMA_SERVE_PROFILE="${LLAMA_SERVE_PROFILE:-dev}"
export CCACHE_BASEDIR="$PWD"  # relative paths: cache hits across clones
export HF_HUB_OFFLINE=1  # tests never reach a model hub
PYTHON="${PYTHON:-python3}"
VENV=.venv-test

# A compiler cache makes rebuilds cheap; install it where we can, carry on without it where we can't.
if ! command -v ccache >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq ccache >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq ccache >/dev/null; } \
        || echo "test.sh: ccache unavailable, building without a compiler cache"
fi

# A real browser for the web UI test (Debian's Chromium + its driver; never a browser download).
if ! command -v chromedriver >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } \
        || echo "test.sh: chromium unavailable, the browser test will be skipped"
fi

# The Vulkan add-on is built and tested on Mesa's software Vulkan device (Debian's packages; headers older
# than the code expects are handled by patches/0003). LLAMA_SERVE_TEST_VULKAN=0 skips it.
VULKAN="${LLAMA_SERVE_TEST_VULKAN:-1}"
if [ "$VULKAN" = 1 ] && ! command -v glslc >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    packages="libvulkan-dev glslc spirv-headers glslang-tools mesa-vulkan-drivers"
    apt-get install -y -qq $packages >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq $packages >/dev/null; } \
        || echo "test.sh: Vulkan toolchain unavailable, the Vulkan tests will be skipped"
fi

start=$(date +%s)
"$PYTHON" -m venv --clear "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
rm -rf dist
"$VENV/bin/python" -m pip wheel . --no-deps -w dist --disable-pip-version-check
built=$(date +%s)
wheel=$(ls dist/llama_serve-*.whl)
# A CPU build of torch for the real-embedding reference (sentence-transformers); this index has 2.13.0+cpu.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==${LLAMA_SERVE_TEST_TORCH:-2.13.0}"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${wheel}[test,test-embeddings]"
if [ "$VULKAN" = 1 ] && command -v glslc >/dev/null; then
    vulkan_start=$(date +%s)
    rm -rf dist-addons
    "$VENV/bin/python" -m pip wheel ./addons/vulkan --no-deps -w dist-addons --disable-pip-version-check
    "$VENV/bin/python" -m pip install -q --no-deps --disable-pip-version-check dist-addons/llama_serve_vulkan-*.whl
    echo "test.sh: Vulkan add-on built in $(($(date +%s) - vulkan_start)) s"
fi
echo "test.sh: wheel $(basename "$wheel") ($(du -h "$wheel" | cut -f1)) built in $((built - start)) s" \
     "(profile $LLAMA_SERVE_PROFILE)"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
