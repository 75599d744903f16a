"""The CUDA add-on (addons/cuda13, built here by scripts/build_cuda_addon.sh; not built by .ci/run: ggml-cuda
takes about 20 minutes per architecture on two cores). Skipped, with the reason, when it is not installed.

Without a GPU driver (this project's build machine) the add-on must stay out of the way: ggml's loader skips
a backend whose libraries do not load, and the CPU serves as before. With a CUDA device the server and
``_core`` run on it and give the CPU's greedy tokens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import llama_serve as ls
from serverproc import backend_devices, greedy_tokens

INSTALLED = bool(list(ls.bin_dir().glob("*ggml-cuda*")))
CUDA_DEVICES = backend_devices("cuda") if INSTALLED else []
pytestmark = pytest.mark.skipif(not INSTALLED, reason="the CUDA add-on is not installed (pip install "
                                                      "llama-serve[cuda13], or bash scripts/build_cuda_addon.sh)")
has_device = pytest.mark.skipif(not CUDA_DEVICES, reason="no CUDA device (no GPU or no driver)")
no_device = pytest.mark.skipif(bool(CUDA_DEVICES), reason="a CUDA device is present")


@no_device
def test_without_a_driver_the_cpu_still_serves(deterministic_model: Path) -> None:
    listed = subprocess.run([sys.executable, "-m", "llama_serve", "--list-devices"], capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "CUDA" not in listed.stdout
    # Not silent: what is missing is named (the driver here; the runtime wheels come with the add-on).
    assert "libggml-cuda" in listed.stderr and "libcuda.so.1" in listed.stderr, listed.stderr
    assert "libcuda.so.1" in ls.backend_load_errors()["libggml-cuda.so"]
    assert "CPU" in {d["backend"] for d in ls.devices()}
    with ls.Server(deterministic_model, ctx_size=256) as server:
        assert len(greedy_tokens(server.base_url, 4)) == 4


@has_device
def test_server_on_the_cuda_device_matches_the_cpu(deterministic_model: Path, random_model: Path) -> None:
    for model in (deterministic_model, random_model):
        with ls.Server(model, ctx_size=256) as cpu:
            expected = greedy_tokens(cpu.base_url, 8)
        with ls.Server(model, ctx_size=256, n_gpu_layers=99, extra_args=["--device", "CUDA0", "--verbose"]) as gpu:
            assert greedy_tokens(gpu.base_url, 8) == expected
            assert "assigned to device CUDA0" in "\n".join(gpu.logs())


@has_device
def test_core_decodes_on_the_cuda_device(random_model: Path) -> None:
    tokens = []
    for layers in (0, 99):
        with ls.Model(random_model, n_gpu_layers=layers) as model, model.context(n_ctx=256) as ctx:
            tokens.append(int(ctx.decode(model.tokenize("Hello")).argmax()))
    assert tokens[0] == tokens[1]
