"""Fuzzing the bindings: an atheris target and a GGUF mutation sweep. Each prints a JSON summary last.

    python tests/fuzz_core.py atheris MODEL [libFuzzer flags, e.g. -atheris_runs=5000 -seed=1]
    python tests/fuzz_core.py gguf MODEL --cases 150 --seed 0

Every input must end in a result or a Python exception; a crash kills this process, and the driver (the
test) sees the signal and the last case printed (one line per GGUF case, flushed, before it is loaded).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import struct
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llama_serve as ls

# Exceptions the bindings document for bad input; anything else is a finding.
EXPECTED: tuple[type[BaseException], ...] = (ls.LlamaError, ValueError, TypeError, OverflowError, UnicodeError,
                                             FileNotFoundError)


def outcome(action: Callable[[], Any]) -> str:
    try:
        action()
    except EXPECTED as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0][:70] if str(e) else ''}"
    return "ok"


# -- atheris ---------------------------------------------------------------------------------------------------
OPS = ["tokenize-bytes", "tokenize-str", "detokenize", "decode", "grammar", "json-schema", "token-to-piece"]
def atheris_main(model_path: str, flags: list[str]) -> int:
    import atheris

    model = ls.Model(model_path)
    ctx = model.context(n_ctx=256, n_batch=64, n_seq_max=2)
    counts: collections.Counter[str] = collections.Counter()
    n_vocab = model.n_vocab

    def one_input(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        op = fdp.ConsumeIntInRange(0, 6)
        if op == 0:  # raw bytes, invalid UTF-8 and NULs included
            result = outcome(lambda: model.tokenize(fdp.ConsumeBytes(fdp.remaining_bytes()),
                                                    parse_special=fdp.ConsumeBool()))
        elif op == 1:
            result = outcome(lambda: model.tokenize(fdp.ConsumeUnicode(fdp.remaining_bytes()),
                                                    add_special=fdp.ConsumeBool(), parse_special=True))
        elif op == 2:  # any ids, negative and out of range included
            ids = [fdp.ConsumeIntInRange(-(2**31), 2**31 - 1) if fdp.ConsumeBool() else
                   fdp.ConsumeIntInRange(0, n_vocab - 1) for _ in range(fdp.ConsumeIntInRange(0, 16))]
            result = outcome(lambda: model.detokenize(ids))
        elif op == 3:  # decode: empty, over-context, bad sequence ids
            # (an exhausted provider returns each range's minimum: rare cases sit at the top of their range)
            ids = [fdp.ConsumeIntInRange(0, n_vocab - 1) for _ in range(fdp.ConsumeIntInRange(1, 300))]
            if fdp.ConsumeIntInRange(0, 7) == 7:  # now and then one id out of range, or none at all
                ids[fdp.ConsumeIntInRange(0, len(ids) - 1)] = n_vocab + fdp.ConsumeIntInRange(-5, 5)
            elif fdp.ConsumeIntInRange(0, 15) == 15:
                ids = []
            seq = fdp.ConsumeIntInRange(-3, 4) if fdp.ConsumeIntInRange(0, 3) == 3 else 0
            ctx.clear()
            result = outcome(lambda: ctx.decode(ids, seq_id=seq, all=fdp.ConsumeBool()))
        elif op == 4:
            result = outcome(lambda: ls.Sampler(grammar=fdp.ConsumeUnicode(512)).bind(model._native))
        elif op == 5:
            result = outcome(lambda: ls.Sampler(json_schema=fdp.ConsumeUnicode(512)).bind(model._native))
        else:
            result = outcome(lambda: model.token_to_piece(fdp.ConsumeIntInRange(-(2**31), 2**31 - 1)))
        counts[f"{OPS[op]} {result.split(':')[0]}"] += 1
        if os.environ.get("FUZZ_DEBUG"):
            print(OPS[op], result)

    atheris.Setup([sys.argv[0], *flags], one_input)
    try:
        atheris.Fuzz()
    except SystemExit:  # atheris exits when -atheris_runs is reached
        pass
    finally:
        print(json.dumps({"cases": sum(counts.values()), "outcomes": dict(sorted(counts.items()))}), flush=True)
    return 0


# -- GGUF mutations --------------------------------------------------------------------------------------------
def regions(path: Path) -> dict[str, list[int]]:
    """Offsets worth mutating: the header, each metadata key/value's start, each tensor info's start, the data."""
    import gguf

    reader = gguf.GGUFReader(path)
    data_start = min(t.data_offset for t in reader.tensors)
    return {
        "header": list(range(4, 24)),  # version, tensor count, key/value count (after the magic)
        "metadata": [f.offset for f in reader.fields.values() if not f.name.startswith("GGUF.")],
        "tensor-info": [t.field.offset for t in reader.tensors],
        "data": list(range(data_start, path.stat().st_size, 4096)),
    }


def mutate(data: bytearray, where: dict[str, list[int]], rng: random.Random) -> str:
    kind = rng.choice(["header", "metadata", "metadata", "tensor-info", "tensor-info", "data", "truncate"])
    if kind == "truncate":
        cut = rng.randrange(4, len(data))
        del data[cut:]
        return f"truncate at {cut}"
    offset = rng.choice(where[kind]) + rng.randrange(0, 24 if kind != "data" else 4096)
    offset = min(offset, len(data) - 8)
    how = rng.choice(["byte", "u64-max", "u64-random", "u32-random", "zero"])
    if how == "byte":
        data[offset] ^= 1 << rng.randrange(8)
    elif how == "u64-max":
        data[offset:offset + 8] = struct.pack("<Q", 2**64 - 1)
    elif how == "u64-random":
        data[offset:offset + 8] = struct.pack("<Q", rng.getrandbits(64))
    elif how == "u32-random":
        data[offset:offset + 4] = struct.pack("<I", rng.getrandbits(32))
    else:
        data[offset:offset + 8] = bytes(8)
    return f"{kind} {how} at {offset}"


def gguf_main(model_path: str, cases: int, seed: int) -> int:
    original = Path(model_path).read_bytes()
    where = regions(Path(model_path))
    rng = random.Random(seed)
    counts: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory(prefix="gguf-mutations-") as tmp:
        path = Path(tmp) / "mutated.gguf"
        for case in range(cases):
            data = bytearray(original)
            what = mutate(data, where, rng)
            path.write_bytes(data)
            print(f"case {case}: {what}", flush=True)

            def load_and_run() -> None:
                with ls.Model(path) as model, model.context(n_ctx=64) as ctx:
                    ctx.decode(model.tokenize("Hello world"))

            counts[outcome(load_and_run)] += 1
    print(json.dumps({"cases": cases, "outcomes": dict(counts.most_common())}), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["atheris", "gguf"])
    parser.add_argument("model")
    parser.add_argument("--cases", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args, rest = parser.parse_known_args()
    if args.mode == "atheris":
        return atheris_main(args.model, rest)
    return gguf_main(args.model, args.cases, args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
