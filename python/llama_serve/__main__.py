"""``llama-serve`` / ``python -m llama_serve``: the bundled llama.cpp server."""

from __future__ import annotations

import os
import sys

from ._launcher import BinaryNotFoundError, die_with_parent, exec_server


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
        if "--rpc" in args:  # workers checked here: upstream aborts on one it cannot reach
            from .rpc import RpcArgumentError, prepare_rpc_args

            try:
                args = prepare_rpc_args(args)
            except RpcArgumentError as e:
                print(f"llama-serve: {e}", file=sys.stderr)
                return 2
        if mentions_hub(args):  # start-up time matters: the resolver is imported only when needed
            from .hub import ModelReferenceError, resolve_cli_args

            try:
                args = resolve_cli_args(args, os.environ)
            except ModelReferenceError as e:
                print(f"llama-serve: {e}", file=sys.stderr)
                return 2
        if "--list-devices" in args:  # ggml skips a GPU add-on that does not load without saying why
            from .backends import describe_load_errors

            for line in describe_load_errors():
                print(line, file=sys.stderr)
        return exec_server(args)
    except BinaryNotFoundError as e:
        print(f"llama-serve: {e}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    raise SystemExit(main())
