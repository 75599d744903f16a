"""Concurrent streaming clients: llama-serve (one server, 8 slots, continuous batching) against
llama-cpp-python's server (``python -m llama_cpp.server`` 0.3.36, one request at a time), in one run.

Both servers run the same model over the same libllama and CPU backend module (the peer is started by
``benchmarks/lcp_server.py`` with ``LLAMA_CPP_LIB_PATH`` pointing at our ``lib``) with the same settings: greedy
sampling (temperature 0, repeat penalty 1), all cores, flash attention on, the same per-request context. 1, 4 and 8
clients each stream one ``/v1/completions`` request through the official ``openai.AsyncOpenAI`` client, all sent at
once; a request has a 64-token prompt (a serial number at the front, so no server answers it from a prompt cache)
and must generate 128 tokens (``max_tokens``; every request is checked to end with ``finish_reason == "length"``,
llama-serve's streamed ``usage`` must say 128). Measured: aggregate generated tokens/s (all tokens ÷ wall time from
the first request sent to the last token received) and time to first token. Rounds alternate the sides; medians of
the rounds, TTFT percentiles over every request of every round.

    python benchmarks/bench_concurrency.py [--rounds 3] [--quant Q8_0] [--peer-python .bench/lcp/bin/python] [--smoke]

``benchmarks/setup_peers.sh`` makes the peer venv. Writes ``benchmarks/results/concurrency.md`` and ``.png``.
``--smoke`` (used by the tests): tiny generated model, 16 tokens, one round; the peer side runs only where its venv
exists, and the report says so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import openai

import llama_serve as ls
from llama_serve import testmodels
from llama_serve.server import Server

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEER_PYTHON = ROOT / ".bench" / "lcp" / "bin" / "python"
OURS, PEER = "llama-serve", "llama-cpp-python"
UVICORN_LISTENING = re.compile(r"Uvicorn running on (http://\S+)")
PEER_VERSION = re.compile(r"lcp_server: llama-cpp-python (\S+),")
FILLER = ("The quick brown fox jumps over the lazy dog while the river keeps flowing past old stone bridges and "
          "quiet farms under a pale morning sky full of birds and distant thunder rolling across green hills")
# Sampling both servers share; ignore_eos is llama-server's (the peer ignores unknown fields and has no such switch,
# so its requests are checked to have stopped at max_tokens, never at an end-of-generation token).
SAMPLING: dict[str, Any] = {"temperature": 0.0, "extra_body": {"repeat_penalty": 1.0, "ignore_eos": True}}


@dataclass
class Settings:
    n_prompt: int
    n_gen: int
    slots: int
    threads: int

    @property
    def ctx_per_request(self) -> int:
        return self.n_prompt + self.n_gen + 64


class PeerServer:
    """llama-cpp-python's server in its own venv, on a port the kernel picks.

    It forwards ``--port`` to uvicorn, which binds port 0 to a free port and logs the bound address, so the port is
    read from that log line, race-free (as ``llama_serve.Server`` does with llama-server's log).
    """

    def __init__(self, python: Path, model: Path, settings: Settings, timeout: float = 300.0) -> None:
        package = Path(ls.__file__).parent
        self.log = tempfile.NamedTemporaryFile("w+", prefix="lcp-server-", suffix=".log")  # noqa: SIM115
        args = ["--model", str(model), "--n_ctx", str(settings.ctx_per_request), "--n_threads", str(settings.threads),
                "--n_threads_batch", str(settings.threads), "--flash_attn", "True",
                # its default True computes logits for every prompt token; llama-server computes the last one only
                "--logits_all", "False",
                # its default True ends a streaming response as soon as another request arrives
                "--interrupt_requests", "False",
                "--verbose", "False", "--host", "127.0.0.1", "--port", "0"]
        self.proc = subprocess.Popen([str(python), str(HERE / "lcp_server.py"), str(package / "bin"), *args],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "LLAMA_CPP_LIB_PATH": str(package / "lib"),
                                          "LCP_SERVER_PARENT": str(os.getpid())})
        try:
            self.base_url = self._wait_ready(timeout)
            version = PEER_VERSION.search(self._log_text())
            self.version = version.group(1) if version else "?"
        except BaseException:
            self.stop()
            raise

    def _log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def _wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited ({self.proc.returncode}):\n{self._log_text()[-3000:]}")
            match = UVICORN_LISTENING.search(self._log_text())
            if match:
                try:
                    with urllib.request.urlopen(match.group(1) + "/v1/models", timeout=5) as resp:
                        if resp.status == 200:
                            return match.group(1)
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"llama_cpp.server not ready after {timeout:.0f} s:\n{self._log_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> PeerServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@dataclass
class Request:
    ttft: float  # seconds from sending to the first streamed text
    tokens: int  # generated tokens: the streamed usage where the server sends it, else max_tokens if reached
    chunks: int  # streamed chunks carrying text
    finish_reason: str | None
    usage_tokens: int | None
    decode_rate: float | None  # llama-server's own timings: this request's generated tokens/s, decoding only


@dataclass
class Load:
    wall: float
    requests: list[Request]

    @property
    def tokens_per_second(self) -> float:
        return sum(r.tokens for r in self.requests) / self.wall

    @property
    def decode_tokens_per_second(self) -> float | None:
        """The server's decoding rate alone (no prompt processing, no HTTP): the sum of the requests' own
        rates, which decode side by side since they are sent together and are of one length."""
        rates = [r.decode_rate for r in self.requests]
        return sum(r for r in rates if r is not None) if None not in rates else None


@dataclass
class SideResults:
    loads: dict[int, list[Load]] = field(default_factory=dict)  # clients -> one Load per round
    problems: list[str] = field(default_factory=list)
    load_averages: list[float] = field(default_factory=list)  # the machine's 1-minute load before each run


def prompts_of_equal_length(model: Path, n_prompt: int, count: int) -> list[str]:
    """``count`` prompts of exactly ``n_prompt`` tokens (BOS included), differing only in a serial at the front."""
    def text(serial: int, words: int) -> str:
        filler = FILLER.split()
        return f"Request {serial:04d}: " + " ".join(filler[i % len(filler)] for i in range(words))

    with ls.Model(model, vocab_only=True) as vocab:
        words = 0
        while len(vocab.tokenize(text(0, words + 1), add_special=True)) <= n_prompt:
            words += 1
        prompts = [text(serial, words) for serial in range(count)]
        lengths = {len(vocab.tokenize(p, add_special=True)) for p in prompts}
    if lengths != {n_prompt}:
        raise RuntimeError(f"could not build {n_prompt}-token prompts (got lengths {sorted(lengths)})")
    return prompts


async def stream_one(client: openai.AsyncOpenAI, model_id: str, prompt: str, n_gen: int) -> Request:
    start = time.perf_counter()
    ttft = None
    chunks = 0
    finish_reason = None
    usage_tokens = None
    decode_rate = None
    stream = await client.completions.create(model=model_id, prompt=prompt, max_tokens=n_gen, stream=True,
                                             stream_options={"include_usage": True}, **SAMPLING)
    async for chunk in stream:
        if chunk.usage is not None:
            usage_tokens = chunk.usage.completion_tokens
        timings = (chunk.model_extra or {}).get("timings")
        if timings:
            decode_rate = float(timings["predicted_per_second"])
        for choice in chunk.choices:
            if choice.text:
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - start
            finish_reason = choice.finish_reason or finish_reason
    reached = n_gen if finish_reason == "length" else chunks
    return Request(ttft if ttft is not None else float("nan"), usage_tokens if usage_tokens is not None else reached,
                   chunks, finish_reason, usage_tokens, decode_rate)


async def run_load(base_url: str, model_id: str, prompts: Sequence[str], n_gen: int) -> Load:
    async with openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="no-key", timeout=3600, max_retries=0) as client:
        start = time.perf_counter()
        requests = await asyncio.gather(*(stream_one(client, model_id, p, n_gen) for p in prompts))
        return Load(time.perf_counter() - start, list(requests))


def check_side(base_url: str, prompt: str, settings: Settings) -> tuple[str, str]:
    """One non-streamed request (also the warm-up): it must use the whole prompt and generate ``n_gen`` tokens.
    Returns (model id, generated text)."""
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="no-key", timeout=3600, max_retries=0)
    model_id = client.models.list().data[0].id
    reply = client.completions.create(model=model_id, prompt=prompt, max_tokens=settings.n_gen, **SAMPLING)
    usage = reply.usage
    if usage is None or usage.completion_tokens != settings.n_gen or usage.prompt_tokens != settings.n_prompt:
        raise RuntimeError(f"{base_url}: expected {settings.n_prompt} prompt and {settings.n_gen} generated tokens, "
                           f"usage says {usage}")
    return model_id, reply.choices[0].text


def problems_of(side: str, load: Load, settings: Settings) -> list[str]:
    found = []
    for r in load.requests:
        if r.finish_reason != "length" or (r.usage_tokens is not None and r.usage_tokens != settings.n_gen):
            found.append(f"{side}: a request ended with finish_reason={r.finish_reason}, usage={r.usage_tokens}, "
                         f"{r.chunks} text chunks (wanted {settings.n_gen} tokens)")
    return found


def machine_info() -> str:
    cpu = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = names[0].strip() if names else cpu
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        total = re.search(r"MemTotal:\s+(\d+) kB", meminfo.read_text())
        memory = f", {int(total.group(1)) / 2**20:.0f} GiB RAM" if total else ""
    return f"{cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}"


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--slots", type=int, default=8, help="llama-serve's parallel slots")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--model", type=Path, help="GGUF model (default: the Llama-3.2-1B-shaped test model)")
    parser.add_argument("--quant", default="Q4_0", help="the test model's weight format (Q4_0, Q8_0)")
    parser.add_argument("--peer-python", type=Path, default=PEER_PYTHON,
                        help="python of a venv with llama-cpp-python[server] 0.3.36 (benchmarks/setup_peers.sh)")
    parser.add_argument("--no-peer", action="store_true", help="run llama-serve only")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "concurrency.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out

    clients = [int(c) for c in args.clients.split(",")]
    settings = Settings(args.prompt_tokens, args.gen_tokens, args.slots, os.cpu_count() or 1)
    rounds = args.rounds
    if args.smoke:
        model = args.model or testmodels.tiny_random()
        settings.n_gen, rounds = 16, 1
        out = args.out.with_name("concurrency-smoke.md")
    else:
        model = args.model or testmodels.realistic(args.quant)
        out = args.out
    with_peer = not args.no_peer and args.peer_python.is_file()
    peer_note = "" if with_peer else f"**{OURS} only**: no llama-cpp-python venv at `{args.peer_python}`."
    if not with_peer:
        print(f"note: {peer_note}")

    prompts = prompts_of_equal_length(model, settings.n_prompt, 1 + rounds * sum(clients))
    check_prompt, load_prompts = prompts[0], iter(prompts[1:])
    results = {OURS: SideResults(), PEER: SideResults()}
    outputs: dict[str, str] = {}
    peer_version = ""
    ours_kwargs: dict[str, Any] = {
        "ctx_size": settings.slots * settings.ctx_per_request, "parallel": settings.slots,
        "extra_args": ["-t", str(settings.threads), "-tb", str(settings.threads), "-fa", "on", "--no-webui"]}
    with Server(model, **ours_kwargs) as ours:
        peer = PeerServer(args.peer_python, model, settings) if with_peer else None
        try:
            urls = {OURS: ours.base_url, **({PEER: peer.base_url} if peer else {})}
            peer_version = peer.version if peer else ""
            model_ids = {}
            for side, url in urls.items():
                model_ids[side], outputs[side] = check_side(url, check_prompt, settings)
            sides = list(urls)
            for round_index in range(rounds):
                order = sides if round_index % 2 == 0 else sides[::-1]
                for n in clients:
                    batch = [next(load_prompts) for _ in range(n)]  # the same prompts for both sides
                    for side in order:
                        results[side].load_averages.append(os.getloadavg()[0])
                        load = asyncio.run(run_load(urls[side], model_ids[side], batch, settings.n_gen))
                        results[side].loads.setdefault(n, []).append(load)
                        results[side].problems += problems_of(side, load, settings)
                        print(f"round {round_index + 1} {side:16} {n} clients: {load.tokens_per_second:7.1f} tokens/s, "
                              f"TTFT max {max(r.ttft for r in load.requests):.2f} s", flush=True)
        finally:
            if peer:
                peer.stop()

    report = render(results, clients, settings, model, rounds, outputs, peer_version or peer_note)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    chart(results, clients, out.with_suffix(".png"))
    print(report)
    problems = results[OURS].problems + results[PEER].problems
    return 1 if problems else 0


@dataclass
class Summary:
    rates: list[float]  # tokens/s, one per round
    ttft_p50: float  # over every request of every round
    ttft_p95: float
    decode_rate: float | None  # median over rounds of Load.decode_tokens_per_second

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def best(self) -> float:
        return max(self.rates)


def summary(side: SideResults, n: int) -> Summary:
    loads = side.loads[n]
    ttfts = [r.ttft for load in loads for r in load.requests]
    decode = [load.decode_tokens_per_second for load in loads]
    decode_rate = statistics.median(d for d in decode if d is not None) if None not in decode else None
    return Summary([load.tokens_per_second for load in loads], percentile(ttfts, 50), percentile(ttfts, 95),
                   decode_rate)


def render(results: dict[str, SideResults], clients: list[int], settings: Settings, model: Path, rounds: int,
           outputs: dict[str, str], peer: str) -> str:
    """``peer``: llama-cpp-python's version, or the note saying why it did not run."""
    with_peer = bool(results[PEER].loads)
    load_averages = results[OURS].load_averages + results[PEER].load_averages
    model_note = ", Llama-3.2-1B shape, random weights" if model.name.startswith("random-ggml-vocab-llama-bpe") else ""
    lines = [
        "# Concurrent streaming clients: llama-serve vs llama-cpp-python's server", "",
        f"Machine: {machine_info()}. 1-minute load average before each run: {min(load_averages):.1f} to "
        f"{max(load_averages):.1f} (other work on the machine adds noise; the sides alternate to share it).",
        f"Model: `{model.name}` ({model.stat().st_size / 1e9:.2f} GB{model_note}). llama-serve {ls.__version__} "
        f"`Server(parallel={settings.slots}, ctx_size={settings.slots * settings.ctx_per_request})` "
        f"({settings.ctx_per_request} tokens per slot, continuous batching)"
        + (f" vs `python -m llama_cpp.server` from llama-cpp-python {peer} (n_ctx "
           f"{settings.ctx_per_request}, one request at a time; `logits_all` and `interrupt_requests` off) over the "
           "same libllama and CPU backend module." if with_peer else "."),
        f"Both: {settings.threads} threads, flash attention on, greedy (temperature 0, repeat penalty 1); each "
        f"client streams one `/v1/completions` request (openai.AsyncOpenAI), all sent at once: a "
        f"{settings.n_prompt}-token prompt (distinct per request) and {settings.n_gen} generated tokens "
        f"(`finish_reason == \"length\"` checked on every request). {rounds} round(s), sides alternating; tokens/s is "
        "the median over rounds of all generated tokens ÷ wall time, TTFT percentiles are over every request.",
    ]
    if not with_peer:
        lines += ["", peer]
    lines += ["", "| clients | llama-serve tokens/s, median (rounds) | llama-cpp-python tokens/s, median (rounds) | "
              "ratio of medians | ratio of best rounds | TTFT p50 (s) ours / theirs | TTFT p95 (s) ours / theirs |",
              "| --- | --- | --- | --- | --- | --- | --- |"]

    def rates(s: Summary) -> str:
        return f"{s.median:.1f} ({', '.join(f'{r:.1f}' for r in s.rates)})"

    for n in clients:
        ours = summary(results[OURS], n)
        if with_peer:
            theirs = summary(results[PEER], n)
            lines.append(f"| {n} | {rates(ours)} | {rates(theirs)} | {ours.median / theirs.median:.2f}x | "
                         f"{ours.best / theirs.best:.2f}x | {ours.ttft_p50:.2f} / {theirs.ttft_p50:.2f} | "
                         f"{ours.ttft_p95:.2f} / {theirs.ttft_p95:.2f} |")
        else:
            lines.append(f"| {n} | {rates(ours)} | not run | | | {ours.ttft_p50:.2f} / - | {ours.ttft_p95:.2f} / - |")
    lines.append("")
    if with_peer and max(clients) in results[PEER].loads:
        n = max(clients)
        ours, theirs = summary(results[OURS], n), summary(results[PEER], n)
        ratios = (ours.median / theirs.median, ours.best / theirs.best)
        verdict = "met" if min(ratios) >= 3 else "not met"
        lines.append(f"Target ≥ 3x aggregate tokens/s at {n} clients: **{verdict}** ({ratios[0]:.2f}x of medians, "
                     f"{ratios[1]:.2f}x of the best rounds, the least disturbed by other load).")
        # llama-server writes U+FFFD for a token that is not valid UTF-8 alone, llama-cpp-python drops its bytes
        same = "the same" if outputs[OURS].replace("\ufffd", "") == outputs[PEER].replace("\ufffd", "") else "different"
        lines.append(f"Check request (non-streamed, before the rounds): both sides used {settings.n_prompt} prompt and "
                     f"generated {settings.n_gen} tokens; {same} greedy text.")
    decode = {n: summary(results[OURS], n).decode_rate for n in clients}
    if all(rate is not None for rate in decode.values()) and min(clients) == 1:
        single = decode[1] or 1.0
        gains = ", ".join(f"{rate or 0:.1f} tokens/s at {n} client(s) ({(rate or 0) / single:.2f}x)"
                          for n, rate in decode.items())
        lines.append(f"llama-serve's own timings, decoding only (no prompt processing, no HTTP), summed over the "
                     f"streams: {gains}. What one batched decoding step yields over a single-stream one on this "
                     "machine roughly bounds what continuous batching can gain over one-request-at-a-time decoding.")
    problems = results[OURS].problems + results[PEER].problems
    lines.append("Every request generated the requested tokens." if not problems else
                 "**Requests that did not generate the requested tokens:**\n" + "\n".join(f"- {p}" for p in problems))
    chunk_counts = [r.chunks for load in results[PEER].loads.get(max(clients), []) for r in load.requests]
    if chunk_counts:
        lines.append(f"(llama-cpp-python streams no usage; its text chunks per request: {min(chunk_counts)} to "
                     f"{max(chunk_counts)}, fewer than tokens where a character spans tokens.)")
    return "\n".join(lines) + "\n"


def chart(results: dict[str, SideResults], clients: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    sides = [side for side in (OURS, PEER) if results[side].loads]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    width = 0.8 / len(sides)
    positions = np.arange(len(clients))
    for i, side in enumerate(sides):
        stats = [summary(results[side], n) for n in clients]
        offset = positions + (i - (len(sides) - 1) / 2) * width
        medians = np.array([s.median for s in stats])
        spread = [medians - [min(s.rates) for s in stats], [max(s.rates) for s in stats] - medians]
        left.bar(offset, medians, width, yerr=spread, capsize=3, label=side)
        right.bar(offset, [s.ttft_p50 for s in stats], width, label=f"{side} p50")
        right.scatter(offset, [s.ttft_p95 for s in stats], marker="_", s=200, color="black",
                      label="p95" if i == 0 else None, zorder=3)
    for ax in (left, right):
        ax.set_xticks(positions, [str(n) for n in clients])
        ax.set_xlabel("concurrent streaming clients")
    left.set_ylabel("generated tokens/s, all clients\n(median, bars: rounds' range)")
    right.set_ylabel("time to first token (s)")
    right.set_yscale("log")
    right.yaxis.set_major_formatter(ScalarFormatter())
    right.yaxis.set_minor_formatter(NullFormatter())
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
