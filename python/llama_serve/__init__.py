"""llama-serve: llama.cpp's HTTP server and primitives, pip-installable.

The launcher names (``find_server_bin`` …) import nothing native; the primitives (``Model``,
``Context``, ``Sampler``, ``embed`` …) load the ``_core`` extension on first use.
"""

from __future__ import annotations

import importlib

from ._launcher import BinaryNotFoundError, bin_dir, find_server_bin, server_command

TYPE_CHECKING = False  # not typing's: importing typing would cost the `llama-serve` launcher start-up time

__version__ = "0.1.0"

_NATIVE = {
    "Model": "model",
    "Context": "model",
    "Sampler": "sampling",
    "GREEDY": "sampling",
    "Embedder": "embeddings",
    "embed": "embeddings",
    "tokenize": "embeddings",
    "detokenize": "embeddings",
    "devices": "embeddings",
    "backend_load_errors": "backends",
    "Server": "server",
    "ServerPool": "server",
    "ServerError": "server",
    "Endpoint": "server",
    "connect": "server",
    "RpcWorker": "rpc",
    "Metrics": "metrics",
    "timings": "metrics",
    "Chat": "chat",
    "Memory": "chat",
}
_SUBMODULES = ("chat", "testmodels")
_ERRORS = ("LlamaError", "ClosedError", "ContextOverflowError")

if TYPE_CHECKING:
    from typing import Any

    from . import chat as chat
    from . import testmodels as testmodels
    from ._core import ClosedError, ContextOverflowError, LlamaError
    from .backends import backend_load_errors
    from .chat import Chat, Memory
    from .embeddings import Embedder, detokenize, devices, embed, tokenize
    from .metrics import Metrics, timings
    from .model import Context, Model
    from .rpc import RpcWorker
    from .sampling import GREEDY, Sampler
    from .server import Endpoint, Server, ServerError, ServerPool, connect


def __getattr__(name: str) -> Any:
    if name in _NATIVE:
        return getattr(importlib.import_module(f".{_NATIVE[name]}", __name__), name)
    if name in _ERRORS:
        return getattr(importlib.import_module("._native", __name__).core, name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'llama_serve' has no attribute {name!r}")


__all__ = [
    "GREEDY",
    "BinaryNotFoundError",
    "Chat",
    "ClosedError",
    "Context",
    "ContextOverflowError",
    "Embedder",
    "Endpoint",
    "LlamaError",
    "Memory",
    "Metrics",
    "Model",
    "RpcWorker",
    "Sampler",
    "Server",
    "ServerError",
    "ServerPool",
    "__version__",
    "backend_load_errors",
    "bin_dir",
    "connect",
    "detokenize",
    "devices",
    "embed",
    "find_server_bin",
    "server_command",
    "timings",
    "tokenize",
]
