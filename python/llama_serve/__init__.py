"""llama-serve: llama.cpp's HTTP server and primitives, pip-installable."""

from __future__ import annotations

from ._launcher import BinaryNotFoundError, bin_dir, find_server_bin, server_command

__version__ = "0.1.0"

__all__ = ["BinaryNotFoundError", "__version__", "bin_dir", "find_server_bin", "server_command"]
