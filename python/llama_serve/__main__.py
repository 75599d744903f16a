"""``llama-serve`` / ``python -m llama_serve``: the bundled llama.cpp server."""

from __future__ import annotations

import sys

from ._launcher import BinaryNotFoundError, exec_server
from ._version import version_report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if "--version" in args:
            print(version_report())
            return 0
        return exec_server(args)
    except BinaryNotFoundError as e:
        print(f"llama-serve: {e}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    raise SystemExit(main())
