"""The RPC backend's overhead: one server computing locally vs the same model split across two RPC workers
on loopback (``llama-serve-rpc``), in one run, alternating, medians and ratios.

    python benchmarks/bench_rpc.py [--rounds 3] [--quant Q4_0] [--smoke]

Writes ``benchmarks/results/rpc.md``. ``--smoke`` (used by the tests): the tiny generated model, one round.
On one machine the split cannot be faster (the workers share its cores and take turns layer by layer);
what it shows is the price of the protocol: activations over TCP at every layer boundary, per token.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import urllib.request
from pathlib import Path

from llama_serve import RpcWorker, Server, testmodels

HERE = Path(__file__).resolve().parent


def speed(srv: Server, n_prompt: int, n_gen: int, n_vocab: int) -> tuple[float, float]:
    """(prompt tokens/s, generated tokens/s) from one /completion's timings."""
    rng = random.Random(0)
    body = {"prompt": [rng.randrange(1000, min(n_vocab, 30000)) for _ in range(n_prompt)], "n_predict": n_gen,
            "temperature": 0, "cache_prompt": False, "ignore_eos": True}
    request = urllib.request.Request(srv.base_url + "/completion", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=3600) as resp:
        timings = json.load(resp)["timings"]
    return float(timings["prompt_per_second"]), float(timings["predicted_per_second"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quant", default="Q4_0")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "rpc.md")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    if args.smoke:
        model, n_vocab, n_prompt, n_gen, rounds = testmodels.tiny_random(), 32000, 32, 8, 1
    else:
        model, n_vocab, n_prompt, n_gen, rounds = testmodels.realistic(args.quant), 128256, 128, 32, args.rounds
    settings = {"ctx_size": n_prompt + n_gen + 64, "extra_args": ["-t", str(threads), "-np", "1"]}
    samples: dict[str, list[tuple[float, float]]] = {"local": [], "split": []}
    # Workers take turns (layer by layer), so each may use every core.
    with RpcWorker(threads=threads) as w1, RpcWorker(threads=threads) as w2, Server(model, **settings) as local, \
            Server(model, rpc=[w1.endpoint, w2.endpoint], n_gpu_layers=99, **settings) as split:
        for srv in (local, split):
            speed(srv, 8, 2, n_vocab)  # warm
        for _ in range(rounds):
            samples["local"].append(speed(local, n_prompt, n_gen, n_vocab))
            samples["split"].append(speed(split, n_prompt, n_gen, n_vocab))
    lines = [f"Machine: {platform.machine()}, {threads} cores; model {model.name}; {rounds} rounds, medians, "
             "alternating; both workers on this machine's loopback.", "",
             "| measure | local | split over 2 RPC workers | ratio |", "| --- | --- | --- | --- |"]
    for i, what in enumerate((f"prompt processing, {n_prompt} tokens (tokens/s)",
                              f"generation, {n_gen} tokens (tokens/s)")):
        local_median = statistics.median(s[i] for s in samples["local"])
        split_median = statistics.median(s[i] for s in samples["split"])
        lines.append(f"| {what} | {local_median:.1f} | {split_median:.1f} | {split_median / local_median:.3f} |")
    report = "\n".join(lines) + "\n"
    out = args.out.with_name("rpc-smoke.md") if args.smoke else args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
