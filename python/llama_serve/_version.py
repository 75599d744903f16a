"""``llama-serve --version``: our version, the llama.cpp build, and the backends found."""

from __future__ import annotations

import subprocess
import sys

from ._launcher import bin_dir, find_server_bin


def backend_modules() -> list[str]:
    """Names of the ggml backend modules next to the server (``cpu-haswell``, ``rpc``, …)."""
    prefix, suffix = ("ggml-", ".dll") if sys.platform == "win32" else ("libggml-", ".so")
    names = []
    for path in bin_dir().iterdir():
        if path.name.startswith(prefix) and path.name.endswith(suffix):
            names.append(path.name[len(prefix) : -len(suffix)])
    return sorted(names)


def version_report() -> str:
    from . import __version__

    try:
        from ._build_info import LLAMA_CPP_BUILD_NUMBER, LLAMA_CPP_COMMIT, PROFILE

        build = f"llama.cpp b{LLAMA_CPP_BUILD_NUMBER} ({LLAMA_CPP_COMMIT[:7]}, {PROFILE} profile)"
    except ImportError:
        build = "llama.cpp build info missing (an incomplete install?)"
    server = find_server_bin()
    upstream = subprocess.run([str(server), "--version"], capture_output=True, text=True, timeout=60)
    lines = [
        f"llama-serve {__version__}",
        build,
        *(f"  {line}" for line in (upstream.stdout + upstream.stderr).strip().splitlines()),
        f"backends: {', '.join(backend_modules()) or 'none found'} (in {server.parent})",
    ]
    return "\n".join(lines)
