"""``python -m llama_serve.demo [server flags]``: serve a generated test model, offline.

DEMO ONLY: the model is generated on the spot (see :mod:`llama_serve.testmodels`), not a language
model. It continues any text with the following vocabulary tokens ("Hello" -> " Hello" tokens
15044, 15045, ...), which is enough to try every endpoint, the openai client and the web UI
without downloading weights. Serve a real model with ``llama-serve -m model.gguf``.
"""

from __future__ import annotations

import sys

from ._launcher import exec_server


def main(argv: list[str] | None = None) -> int:
    from .testmodels import deterministic

    args = sys.argv[1:] if argv is None else argv
    model = deterministic()
    print(
        "llama-serve demo: serving a GENERATED test model (not a language model):\n"
        f"  {model}\n"
        "  it continues text with the next tokens of its vocabulary; use `llama-serve -m MODEL.gguf` "
        "for a real model.",
        file=sys.stderr,
    )
    return exec_server(["-m", str(model), "--alias", "llama-serve-demo", *args])


if __name__ == "__main__":
    raise SystemExit(main())
