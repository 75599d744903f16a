"""``llama-serve`` / ``python -m llama_serve``: the bundled llama.cpp server."""

from __future__ import annotations

import os
import signal
import sys

from ._launcher import BinaryNotFoundError, exec_server
from ._version import version_report
from .hub import ModelReferenceError, resolve_cli_args

DIE_WITH_PARENT = "LLAMA_SERVE_DIE_WITH_PARENT"  # the parent's pid, set by llama_serve.Server


def die_with_parent() -> None:
    """Under ``llama_serve.Server``: have the kernel kill the server when its Python parent dies.

    The parent-death signal survives ``execv``, so it covers llama-server itself; set before the exec,
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    die_with_parent()
    try:
        if "--version" in args:
            print(version_report())
            return 0
        return exec_server(resolve_cli_args(args, os.environ))
    except BinaryNotFoundError as e:
        print(f"llama-serve: {e}", file=sys.stderr)
        return 127
    except ModelReferenceError as e:
        print(f"llama-serve: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
