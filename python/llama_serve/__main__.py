"""``llama-serve`` / ``python -m llama_serve``: the bundled llama.cpp server."""

from __future__ import annotations

import os
import signal
import sys

from ._launcher import DIE_WITH_PARENT, BinaryNotFoundError, exec_server


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


def mentions_hub(args: list[str]) -> bool:
    """A cheap superset test for Hugging Face references (-hf, --hf-*, hf:…, LLAMA_ARG_HF_*)."""
    return any("hf" in a for a in args) or any(k.startswith("LLAMA_ARG_HF") for k in os.environ) or \
        os.environ.get("LLAMA_ARG_MODEL", "").startswith("hf:")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    die_with_parent()
    try:
        if "--version" in args:
            from ._version import version_report

            print(version_report())
            return 0
        if mentions_hub(args):  # start-up time matters: the resolver is imported only when needed
            from .hub import ModelReferenceError, resolve_cli_args

            try:
                args = resolve_cli_args(args, os.environ)
            except ModelReferenceError as e:
                print(f"llama-serve: {e}", file=sys.stderr)
                return 2
        return exec_server(args)
    except BinaryNotFoundError as e:
        print(f"llama-serve: {e}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    raise SystemExit(main())
