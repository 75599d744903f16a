"""Why an installed GPU add-on shows no device. ggml's loader skips a backend module whose libraries do not
load without a word; this finds those modules and says what is missing."""

from __future__ import annotations

import ctypes
import re

from ._launcher import bin_dir

# GPU backend modules (add-ons); the CPU variants and RPC always load, and probing a CPU variant built for
# a newer processor would run its code.
GPU_MODULE = re.compile(r"^(?:lib)?ggml-(?!cpu|rpc|base)([a-z0-9]+)\.(?:so|dll|dylib)$")
HINTS = {
    "libcuda.so": "the NVIDIA driver is not installed (CUDA 13 needs driver >= 580, CUDA 12 >= 525)",
    "nvcuda.dll": "the NVIDIA driver is not installed",
    "libcudart.so": "NVIDIA's runtime wheels are missing: pip install 'llama-serve[cuda13]' (or [cuda12])",
    "libcublas": "NVIDIA's cuBLAS wheel is missing: pip install 'llama-serve[cuda13]' (or [cuda12])",
    "libvulkan.so": "the Vulkan loader is not installed (Debian/Ubuntu: libvulkan1, plus a driver)",
    "vulkan-1.dll": "the Vulkan runtime is not installed (it comes with the GPU driver)",
}


def backend_load_errors() -> dict[str, str]:
    """``{module file name: why it does not load}`` for each GPU backend module that cannot load here."""
    errors = {}
    for path in sorted(bin_dir().iterdir()):
        if not GPU_MODULE.match(path.name):
            continue
        try:
            ctypes.CDLL(str(path))
        except OSError as e:
            reason = str(e).replace(f"{path}: ", "")
            hint = next((h for lib, h in HINTS.items() if lib in reason), None)
            errors[path.name] = f"{reason}; {hint}" if hint else reason
    return errors


def describe_load_errors() -> list[str]:
    """One line per GPU backend that cannot load, for a person reading ``--list-devices``."""
    return [f"llama-serve: the backend {name} is installed but does not load: {why}"
            for name, why in backend_load_errors().items()]
