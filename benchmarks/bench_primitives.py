"""Tokenize and embed throughput: llama-serve vs llama-cpp-python vs sentence-transformers, in one run.

Each side runs in its own worker process (its own virtual environment where needed), driven over
stdin/stdout; rounds alternate between sides and the table reports medians and ratios.

    python benchmarks/bench_primitives.py --lcp-python .bench/lcp/bin/python --rounds 5

``benchmarks/setup_peers.sh`` makes the llama-cpp-python venv. Writes ``benchmarks/results/primitives.md``
(and ``.png`` where matplotlib is installed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SHORT = [f"Hello world, this is short string number {i}." for i in range(2000)]
LONG = [" ".join(f"word{j} of text {i}, with punctuation!" for j in range(60)) for i in range(200)]
EMBED_TEXTS = [f"Sentence {i}: the quick brown fox jumps over the lazy dog near river bank {i % 17}."
               for i in range(256)]


# --------------------------------------------------------------------------------------------------
# Workers: `python bench_primitives.py --worker SIDE ARGS...`; one JSON request per line in, one out.
# --------------------------------------------------------------------------------------------------
def worker(side: str, vocab: str, minilm: str, minilm_dir: str, minilm_bf16: str) -> None:
    ops: dict[str, Any] = {}
    info: dict[str, float] = {}
    if side == "llama_serve":
        import llama_serve as ls

        model = ls.Model(vocab, vocab_only=True)
        ops["tokenize_calls"] = lambda: [model.tokenize(t) for t in SHORT]
        ops["tokenize_batch"] = lambda: model.tokenize_batch(LONG)
        if minilm:
            embedder = ls.Embedder(minilm, n_threads=os.cpu_count() or 1)
            ops["embed"] = lambda: embedder(EMBED_TEXTS)
            info["embed_tokens"] = sum(map(len, embedder.model.tokenize_batch(EMBED_TEXTS)))
        if minilm_bf16:
            embedder_bf16 = ls.Embedder(minilm_bf16, n_threads=os.cpu_count() or 1)
            ops["embed_bf16"] = lambda: embedder_bf16(EMBED_TEXTS)
    elif side == "llama_cpp_python":
        import llama_cpp

        llm = llama_cpp.Llama(model_path=vocab, vocab_only=True, verbose=False)
        ops["tokenize_calls"] = lambda: [llm.tokenize(t.encode()) for t in SHORT]
        ops["tokenize_batch"] = lambda: [llm.tokenize(t.encode()) for t in LONG]
    elif side == "sentence_transformers":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(os.cpu_count() or 1)
        st = SentenceTransformer(minilm_dir, device="cpu")
        ops["embed"] = lambda: st.encode(EMBED_TEXTS, batch_size=64, normalize_embeddings=True)
        info["sgemm_gflops"] = gemm_gflops(torch, torch.float32)
        info["bf16_gemm_gflops"] = gemm_gflops(torch, torch.bfloat16)
    print(json.dumps({"ready": sorted(ops), **info}), flush=True)
    for line in sys.stdin:
        op = json.loads(line)["op"]
        start = time.perf_counter()
        result = ops[op]()
        seconds = time.perf_counter() - start
        extra: dict[str, Any] = {}
        if op.startswith("embed"):
            extra["vectors"] = [list(map(float, v)) for v in result[:64]]
        print(json.dumps({"seconds": seconds, **extra}), flush=True)


def gemm_gflops(torch: Any, dtype: Any, m: int = 512, k: int = 384, n: int = 1536) -> float:
    """This machine's matrix-product speed through torch (MKL/oneDNN) at a MiniLM feed-forward shape."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    best = float("inf")
    for _ in range(30):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


# all-MiniLM-L6-v2's linear layers: 6 layers of Q, K, V, output (384 x 384) and feed-forward (384 x 1536, back).
MINILM_LINEAR_FLOP_PER_TOKEN = 2 * 6 * (4 * 384 * 384 + 2 * 384 * 1536)


class Worker:
    def __init__(self, python: str, side: str, args: argparse.Namespace) -> None:
        env = {**os.environ, **({"LLAMA_CPP_LIB_PATH": args.lcp_lib} if side == "llama_cpp_python" else {})}
        self.side = side
        self.proc = subprocess.Popen(
            [python, __file__, "--worker", side, "--vocab", args.vocab, "--minilm", args.minilm or "",
             "--minilm-dir", args.minilm_dir or "", "--minilm-bf16", args.minilm_bf16 or ""],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        self.info = json.loads(self.proc.stdout.readline())
        self.ops = self.info["ready"]

    def run(self, op: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op}) + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(30)


UNITS = {"tokenize_calls": (len(SHORT), "calls/s"), "tokenize_batch": (len(LONG), "texts/s"),
         "embed": (len(EMBED_TEXTS), "texts/s"), "embed_bf16": (len(EMBED_TEXTS), "texts/s")}
# benchmark -> (peer side, peer's benchmark)
PEER = {"tokenize_calls": ("llama_cpp_python", "tokenize_calls"),
        "tokenize_batch": ("llama_cpp_python", "tokenize_batch"),
        "embed": ("sentence_transformers", "embed"), "embed_bf16": ("sentence_transformers", "embed")}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker")
    parser.add_argument("--vocab", default=str(HERE.parent / "vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf"))
    parser.add_argument("--minilm", help="all-MiniLM-L6-v2 GGUF (f32)")
    parser.add_argument("--minilm-dir", help="its Hugging Face folder, for sentence-transformers")
    parser.add_argument("--minilm-bf16", help="the same model converted to bf16 (optional)")
    parser.add_argument("--lcp-python", help="python of a venv with llama-cpp-python 0.3.36")
    parser.add_argument("--lcp-lib", default="", help="LLAMA_CPP_LIB_PATH for it")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "primitives.md")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.vocab, args.minilm, args.minilm_dir, args.minilm_bf16)
        return 0

    workers = [Worker(sys.executable, "llama_serve", args)]
    if args.lcp_python:
        workers.append(Worker(args.lcp_python, "llama_cpp_python", args))
    if args.minilm_dir:
        workers.append(Worker(sys.executable, "sentence_transformers", args))
    times: dict[tuple[str, str], list[float]] = {}
    vectors: dict[str, list[list[float]]] = {}
    for _ in range(args.rounds + 1):  # the first round warms up and is dropped
        for op in UNITS:
            for w in workers:  # alternate sides within each round
                if op in w.ops:
                    reply = w.run(op)
                    times.setdefault((w.side, op), []).append(reply["seconds"])
                    if "vectors" in reply:
                        vectors[f"{w.side}:{op}"] = reply["vectors"]
    for w in workers:
        w.close()
    info = {k: v for w in workers for k, v in w.info.items() if k != "ready"}

    rows = []
    for op, (count, unit) in UNITS.items():
        peer, peer_op = PEER[op]
        ours = times.get(("llama_serve", op))
        theirs = times.get((peer, peer_op))
        if not ours:
            continue
        our_rate = count / statistics.median(ours[1:])
        their_rate = count / statistics.median(theirs[1:]) if theirs else None
        rows.append((op, unit, our_rate, peer, their_rate))
    accuracy = []
    reference = vectors.get("sentence_transformers:embed")
    for key, ours_vectors in vectors.items():
        if key.startswith("llama_serve:") and reference is not None:
            import numpy as np

            cosine = np.sum(np.array(ours_vectors) * np.array(reference), axis=1)
            accuracy.append(f"{key.split(':')[1]}: cosine vs sentence-transformers min {float(cosine.min()):.5f}")

    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"{args.rounds} rounds (median, after one warm-up round), sides alternating.", "",
             "| benchmark | llama-serve | peer | peer rate | ratio |", "| --- | --- | --- | --- | --- |"]
    for op, unit, ours_rate, peer, peer_rate in rows:
        ratio = f"{ours_rate / peer_rate:.2f}x" if peer_rate else "n/a"
        peer_text = f"{peer_rate:,.0f} {unit}" if peer_rate else "not run"
        lines.append(f"| {op} | {ours_rate:,.0f} {unit} | {peer} | {peer_text} | {ratio} |")
    if accuracy:
        lines += [""] + [f"- {a}" for a in accuracy]
    lines += embed_ceiling(info, rows)
    report = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        labels = [r[0] for r in rows if r[4]]
        ratios = [r[2] / r[4] for r in rows if r[4]]
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.barh(labels, ratios)
        ax.axvline(1.0, color="gray", linestyle="--")
        ax.set_xlabel("llama-serve speed / peer speed")
        fig.tight_layout()
        fig.savefig(args.out.with_suffix(".png"))
    except ImportError:
        pass
    return 0


def embed_ceiling(info: dict[str, float], rows: list[tuple[str, str, float, str, float | None]]) -> list[str]:
    """How close each side's embedding runs to this machine's fp32 matrix-product speed (the linear layers are
    almost all of MiniLM's work): what a speed-up over sentence-transformers at fp32 accuracy can be here."""
    if "embed_tokens" not in info or "sgemm_gflops" not in info:
        return []
    flop = info["embed_tokens"] * MINILM_LINEAR_FLOP_PER_TOKEN / len(EMBED_TEXTS)  # per text
    ceiling = info["sgemm_gflops"]
    lines = ["", f"Embedding ceiling: MiniLM's linear layers cost {flop / 1e6:.0f} MFLOP per text here "
                 f"({info['embed_tokens'] / len(EMBED_TEXTS):.0f} tokens); this machine's fp32 matrix product "
                 f"(torch, 512x384x1536, all cores) runs at {ceiling:.0f} GFLOP/s "
                 f"(bf16: {info.get('bf16_gemm_gflops', 0):.0f} GFLOP/s)."]
    for op, _unit, ours, peer, theirs in rows:
        if op.startswith("embed") and theirs:
            our_gflops, their_gflops = ours * flop / 1e9, theirs * flop / 1e9
            lines.append(f"- {op}: llama-serve {our_gflops:.0f} GFLOP/s ({our_gflops / ceiling:.0%} of it), "
                         f"{peer} {their_gflops:.0f} GFLOP/s ({their_gflops / ceiling:.0%})")
    st_rate = next((theirs for op, _u, _o, _p, theirs in rows if op == "embed" and theirs), None)
    if st_rate:
        need = 1.5 * st_rate * flop / 1e9
        lines.append(f"- 1.5x sentence-transformers would take {need:.0f} GFLOP/s in the linear layers alone, "
                     f"{need / ceiling:.2f}x this machine's fp32 matrix-product speed.")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
