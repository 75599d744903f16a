"""Multi-turn chat speed: time to first token of turns 1..N with the server's prompt cache (what ``ls.Chat``
does) vs the same conversation with the cache off, 4 chats in parallel on one ``parallel=4`` server, and
``Chat``'s overhead per turn vs the bare ``openai`` client — in one run, medians and ratios.

    python benchmarks/bench_chat.py [--turns 20] [--rounds 3] [--quant Q4_0 | small] [--smoke]

Writes ``benchmarks/results/chat.md``. ``--smoke`` (used by the tests): the tiny generated model, 3 turns.
Each user turn is ~200 tokens of text; each reply is 16 generated tokens (a random-weight model: only the
speed is real).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import llama_serve as ls
from llama_serve import testmodels

HERE = Path(__file__).resolve().parent
WORDS = ["river", "stone", "cloud", "lamp", "garden", "window", "bridge", "winter", "copper", "violet", "signal",
         "harbor", "forest", "candle", "mirror", "ladder", "thunder", "meadow", "lantern", "puzzle"]


def user_text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def ttfts(chat: ls.Chat, turns: int, n_words: int, seed: int) -> list[float]:
    """Seconds to the first streamed piece of each turn."""
    rng = random.Random(seed)
    out = []
    for _ in range(turns):
        start = time.perf_counter()
        stream = chat.stream(user_text(rng, n_words))
        next(stream)
        out.append(time.perf_counter() - start)
        for _ in stream:
            pass
    return out


def overhead(server: ls.Server, rounds: int) -> tuple[float, float]:
    """Median ms per one-token streamed turn: (Chat.send, bare openai client with the same messages)."""
    chat = ls.Chat(server=server, temperature=0, max_tokens=1)
    client = server.openai(max_retries=0)
    messages = [{"role": "user", "content": "hello"}]
    bare, ours = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in client.chat.completions.create(model="m", messages=messages, max_tokens=1,  # type: ignore[arg-type]
                                                temperature=0, stream=True):
            pass
        bare.append(time.perf_counter() - start)
        chat.set_turns([])
        start = time.perf_counter()
        chat.send("hello")
        ours.append(time.perf_counter() - start)
    return statistics.median(ours) * 1e3, statistics.median(bare) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quant", default="Q4_0", help='weights of the Llama-3.2-1B-shaped model, or "small"')
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "chat.md")
    args = parser.parse_args()
    if args.smoke:
        model, turns, rounds, n_words = testmodels.tiny_random(), 3, 1, 40
    elif args.quant == "small":  # 8 layers of width 1024, F16: attention over the history weighs more
        model = testmodels.build(testmodels.Recipe(kind="random", vocab="ggml-vocab-llama-spm.gguf", n_embd=1024,
                                                   n_layer=8, n_head=16, n_head_kv=4, n_ff=4096, n_ctx_train=65536,
                                                   seed=7, f16=True))
        turns, rounds, n_words = args.turns, args.rounds, 150  # ~200 tokens a turn with this vocabulary
    else:  # Llama-3.2-1B shape, as the other benchmarks
        model = testmodels.realistic(args.quant)
        turns, rounds, n_words = args.turns, args.rounds, 160
    threads = str(os.cpu_count() or 1)
    ctx = 4 * turns * (n_words * 2 + 64)
    rows = []
    with ls.Server(model, ctx_size=ctx, parallel=1, extra_args=["-t", threads]) as srv:
        cached, uncached = [], []
        for r in range(rounds):  # alternating
            cached.append(ttfts(ls.Chat(server=srv, temperature=0, max_tokens=16), turns, n_words, r))
            uncached.append(ttfts(ls.Chat(server=srv, temperature=0, max_tokens=16, cache_prompt=False), turns,
                                  n_words, r))
        for i in range(turns):
            on = statistics.median(c[i] for c in cached)
            off = statistics.median(u[i] for u in uncached)
            rows.append((i + 1, on, off))
        ours_ms, bare_ms = overhead(srv, 20 if not args.smoke else 3)
    with ls.Server(model, ctx_size=4 * ctx, parallel=4, extra_args=["-t", threads]) as srv:
        chats = [ls.Chat(server=srv, temperature=0, max_tokens=16) for _ in range(4)]
        with ThreadPoolExecutor(4) as pool:
            parallel = list(pool.map(lambda ic: ttfts(ic[1], turns, n_words, 100 + ic[0]), enumerate(chats)))
        kept = [c.turns[-1].usage.cached_tokens / c.turns[-1].usage.prompt_tokens  # type: ignore[union-attr]
                for c in chats]

    first_on, last_on, last_off = rows[0][1], rows[-1][1], rows[-1][2]
    shape = ("smoke" if args.smoke else "8 layers of width 1024, F16" if args.quant == "small"
             else f"Llama-3.2-1B shape, {args.quant}") + ", random weights"
    lines = [
        "# Multi-turn chat: time to first token with and without the prompt cache",
        "",
        f"Model: {Path(model).name} ({shape}); "
        f"{n_words} words (~{n_words * 4 // 3} tokens) per user turn, 16 tokens per reply; {rounds} alternating "
        f"rounds, medians. Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores.",
        "",
        "| turn | TTFT, cache on (Chat) | TTFT, cache off | off / on |",
        "|---:|---:|---:|---:|",
        *(f"| {t} | {on * 1e3:.0f} ms | {off * 1e3:.0f} ms | {off / on:.2f}x |" for t, on, off in rows),
        "",
        f"- Turn {turns} vs turn 1 with the cache: **{last_on / first_on:.2f}x** (goal ≤ 1.5x); without it: "
        f"{last_off / rows[0][2]:.2f}x.",
        f"- 4 chats in parallel on one `parallel=4` server: turn {turns} / turn 1 TTFT per chat "
        + ", ".join(f"{p[-1] / p[0]:.2f}x" for p in parallel)
        + "; share of the last prompt served from the cache: " + ", ".join(f"{k:.0%}" for k in kept) + ".",
        f"- `Chat.send` overhead per one-token turn: {ours_ms:.1f} ms vs {bare_ms:.1f} ms for the bare `openai` "
        f"client ({ours_ms / bare_ms:.2f}x; Chat also asks the server for the exact prompt size).",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    out = args.out.with_name(args.out.stem + "-smoke.md") if args.smoke else args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
