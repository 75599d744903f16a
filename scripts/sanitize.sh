#!/usr/bin/env bash
# The bindings under AddressSanitizer + UndefinedBehaviorSanitizer: build a wheel whose _core is compiled
# with -fsanitize=address,undefined (CMake setting LLAMA_SERVE_SANITIZE; llama.cpp itself is not
# instrumented), in its own build directory, install it into its own venv, and run the binding tests
# with the sanitizer runtimes preloaded into Python. Any report fails the run.
#   bash scripts/sanitize.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
export LLAMA_SERVE_PROFILE="${LLAMA_SERVE_PROFILE:-dev}"
export CCACHE_BASEDIR="$PWD"
export HF_HUB_OFFLINE=1
SANITIZE="${LLAMA_SERVE_SANITIZE:-address,undefined}"
VENV=.venv-sanitize
PYTHON="${PYTHON:-python3}"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
rm -rf dist-sanitize
"$VENV/bin/python" -m pip wheel . --no-deps -w dist-sanitize --disable-pip-version-check \
    -C build-dir=build/sanitize -C cmake.define.LLAMA_SERVE_SANITIZE="$SANITIZE"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps dist-sanitize/*.whl
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$(ls dist-sanitize/*.whl)[test]"

runtimes="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
# Python leaks by design at exit and uses its own allocator unless told: leaks off, plain malloc.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONMALLOC=malloc
LD_PRELOAD="$runtimes" "$VENV/bin/python" -m pytest -p no:cacheprovider -q \
    tests/test_core.py tests/test_core_errors.py tests/test_tokenizer_parity.py tests/test_fuzz_core.py "$@"
