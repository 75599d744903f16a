"""The Vulkan add-on (addons/vulkan) on whatever Vulkan device this machine has — here Mesa's software
device (lavapipe). Skipped, with the reason, when the add-on or a device is missing.

ggml-vulkan hides CPU-type devices such as lavapipe unless GGML_VK_VISIBLE_DEVICES names them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import llama_serve as ls
from serverproc import backend_devices, greedy_tokens

HELLO = 15043
VULKAN_ENV = {"GGML_VK_VISIBLE_DEVICES": os.environ.get("GGML_VK_VISIBLE_DEVICES", "0")}


def vulkan_devices() -> list[dict[str, object]]:
    return backend_devices("vulkan", VULKAN_ENV)


def skip_reason() -> str | None:
    if not list(ls.bin_dir().glob("*ggml-vulkan*")):
        return "the Vulkan add-on is not installed (pip install llama-serve[vulkan], or build addons/vulkan)"
    if not vulkan_devices():
        return "no Vulkan device (install a driver, e.g. Debian's mesa-vulkan-drivers for the software one)"
    return None


pytestmark = pytest.mark.skipif(bool(reason := skip_reason()), reason=reason or "")


def test_devices_lists_the_vulkan_device() -> None:
    devices = vulkan_devices()
    assert devices and str(devices[0]["name"]).startswith("Vulkan")


def test_server_on_the_vulkan_device_matches_the_cpu(deterministic_model: Path, random_model: Path) -> None:
    device = str(vulkan_devices()[0]["name"])
    for model in (deterministic_model, random_model):
        with ls.Server(model, ctx_size=256) as cpu:
            expected = greedy_tokens(cpu.base_url, 8)
        with ls.Server(model, ctx_size=256, n_gpu_layers=99, env=VULKAN_ENV,
                       extra_args=["--device", device, "--verbose"], start_timeout=600) as gpu:
            assert greedy_tokens(gpu.base_url, 8) == expected
            placed = "\n".join(gpu.logs())
            assert f"assigned to device {device}" in placed and "assigned to device CPU" not in placed
            reply = gpu.openai().chat.completions.create(
                model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0)
            assert reply.choices[0].message.content is not None
        if model == deterministic_model:
            assert expected == list(range(HELLO + 1, HELLO + 9))
