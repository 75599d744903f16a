"""The threading contract under load: N threads call every public method of Model, Context, Sampler and
Embedder on shared objects while others close them at random. Every call must return or raise ClosedError,
LlamaError or ValueError (for arguments that became invalid); never deadlock or crash.

    python stress_threads.py MODEL SECONDS SEED   -> prints one JSON line of outcome counts, exits 0
"""

from __future__ import annotations

import collections
import json
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import llama_serve as ls

EXPECTED = (ls.ClosedError, ls.LlamaError, ls.ContextOverflowError, ValueError)


def main(model_path: str, seconds: float, seed: int) -> int:
    counts: collections.Counter[str] = collections.Counter()
    unexpected: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def objects() -> dict[str, Any]:
        model = ls.Model(model_path)
        ctx = model.context(n_ctx=256, n_batch=64, n_threads=1)
        return {"model": model, "ctx": ctx, "sampler": ls.Sampler(temperature=0.5, seed=1).bind(model._native),
                "embedder": ls.Embedder(model_path, n_ctx=128, n_seq_max=2, pooling="mean")}

    shared = objects()

    def calls(o: dict[str, Any], r: random.Random) -> list[Callable[[], Any]]:
        m, c, s, e = o["model"], o["ctx"], o["sampler"], o["embedder"]
        ids = [r.randrange(1, 300) for _ in range(r.randrange(1, 8))]
        return [
            lambda: m.tokenize("hello world"), lambda: m.tokenize_batch(["a b", "c"] * 20, n_threads=2),
            lambda: m.detokenize(ids), lambda: m.token_to_piece(ids[0]), lambda: m.token_text(ids[0]),
            lambda: m.is_eog(ids[0]), lambda: m.metadata, lambda: m.n_vocab, lambda: m.n_embd, lambda: m.bos,
            lambda: m.eos, lambda: m.description, lambda: repr(m),
            lambda: m.apply_chat_template([{"role": "user", "content": "hi"}]),
            lambda: c.decode(ids), lambda: c.decode(ids, all=True), lambda: c.eval(ids), lambda: c._native.logits(),
            lambda: c.n_past(), lambda: c.n_ctx, lambda: c.clear(), lambda: c.remove(0, 0, 2),
            lambda: c.copy_seq(0, 0), lambda: c.keep_seq(0), lambda: c.save_state(),
            lambda: c.load_state(c.save_state()), lambda: c.generate_tokens(ids, max_tokens=3),
            lambda: s.sample(c._native), lambda: s.accept(ids[0]), lambda: s.reset(), lambda: repr(s),
            lambda: e(["some text", "more"]), lambda: ls.tokenize(model_path, "x"),
        ]

    def closer() -> None:
        nonlocal shared
        r = random.Random(seed + 1)
        while time.monotonic() < deadline:
            time.sleep(r.uniform(0.05, 0.3))
            victim = r.choice(["model", "ctx", "embedder", "renew"])
            if victim == "renew":
                old, shared = shared, objects()
                old["model"].close()
                old["embedder"].close()
            else:
                shared[victim].close()
            with lock:
                counts[f"close {victim}"] += 1

    def worker(n: int) -> None:
        r = random.Random(seed * 100 + n)
        while time.monotonic() < deadline:
            call = r.choice(calls(shared, r))
            try:
                call()
                outcome = "ok"
            except EXPECTED as e:
                outcome = type(e).__name__
            except Exception as e:  # anything else breaks the contract
                with lock:
                    unexpected.append(f"{type(e).__name__}: {e}")
                outcome = "unexpected"
            with lock:
                counts[outcome] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)] + [threading.Thread(target=closer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"counts": counts, "unexpected": unexpected[:20]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
