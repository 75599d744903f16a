"""Find the bundled llama.cpp executables and hand the process over to them."""

from __future__ import annotations

import os
import signal
import sys

TYPE_CHECKING = False  # not typing's: `llama-serve` start-up time counts (pathlib is imported when needed too)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

SERVER = "llama-server"
DIE_WITH_PARENT = "LLAMA_SERVE_DIE_WITH_PARENT"  # parent pid, set by llama_serve.Server, read by __main__
EXE_SUFFIX = ".exe" if sys.platform == "win32" else ""


class BinaryNotFoundError(FileNotFoundError):
    """A bundled executable is missing; the message names every place looked at."""


def _candidate_dirs() -> list[Path]:
    """Where a bundled ``bin`` folder may be: the imported package first, then sys.path."""
    from importlib import resources
    from pathlib import Path

    dirs = [Path(str(resources.files("llama_serve") / "bin"))]
    for entry in sys.path:
        candidate = Path(entry or ".").resolve() / "llama_serve" / "bin"
        if candidate not in dirs:
            dirs.append(candidate)
    return dirs


def find_bin(name: str) -> Path:
    """Path of the bundled executable ``name``; raises naming every path tried."""
    tried = []
    for folder in _candidate_dirs():
        path = folder / (name + EXE_SUFFIX)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        tried.append(path)
    places = "\n".join(f"  - {p}" for p in tried)
    raise BinaryNotFoundError(
        f"could not find the bundled {name}{EXE_SUFFIX}; looked in:\n{places}\n"
        "Reinstall llama-serve (pip install --force-reinstall llama-serve), "
        "or build it from source with `pip install .`."
    )


def die_with_parent() -> None:
    """Under ``Server``/``RpcWorker``: have the kernel kill the child when its Python parent dies.

    The parent-death signal survives ``execv``, so it covers the bundled binary itself; set before the exec,
    then the parent is checked once more in case it died in between.
    """
    parent = os.environ.pop(DIE_WITH_PARENT, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != int(parent):
        os._exit(1)


def find_server_bin() -> Path:
    """Path of the bundled ``llama-server``."""
    return find_bin(SERVER)


def bin_dir() -> Path:
    """The folder holding the bundled executables and ggml backend modules."""
    return find_server_bin().parent


def server_command(args: list[str]) -> list[str]:
    """argv that runs the bundled server with ``args``, untouched."""
    return [str(find_server_bin()), *args]


def _own_bin(name: str) -> str | None:
    """The executable in this package's own ``bin`` folder: the usual place, found with ``os.path`` alone."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", name + EXE_SUFFIX)
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def exec_server(args: list[str]) -> int:
    """Become the server (POSIX ``execv``): PID, signals and exit code are the server's."""
    return exec_bin([_own_bin(SERVER) or str(find_server_bin()), *args])


def exec_bin(argv: list[str]) -> int:
    """Become ``argv`` (POSIX ``execv``); on Windows, where exec does not replace the process, run it as a
    child and return its code."""
    sys.stdout.flush()
    sys.stderr.flush()
    if sys.platform == "win32":
        import subprocess

        return subprocess.call(argv, env=with_nvidia_dll_path(os.environ))
    os.execv(argv[0], argv)
    raise AssertionError("unreachable: execv returned")  # pragma: no cover


def nvidia_dll_dirs(site: Path) -> list[Path]:
    """Folders of NVIDIA's runtime wheels in ``site`` that hold DLLs: ``nvidia/<part>/bin`` (CUDA 12) and
    ``nvidia/cu13/bin/x86_64`` (CUDA 13)."""
    found = {dll.parent for pattern in ("*/bin/*.dll", "*/bin/*/*.dll") for dll in (site / "nvidia").glob(pattern)}
    return sorted(found)


def with_nvidia_dll_path(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with NVIDIA's runtime-wheel DLL folders first on PATH. Windows has no rpath: that is how the CUDA
    add-on's ggml-cuda.dll, loaded by the server and by ``_core``, finds cudart and cuBLAS."""
    dirs = [str(d) for d in nvidia_dll_dirs(bin_dir().parent.parent)]
    if not dirs:
        return dict(env)
    return {**env, "PATH": os.pathsep.join([*dirs, env.get("PATH", "")])}
