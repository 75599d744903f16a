"""The bundled server against upstream's llama-server built natively from the same source, in one run.

1. portable wheel vs native (GGML_NATIVE=ON) build: prompt processing (512-token prompt) and generation
   (128 tokens), tokens/s from the server's own ``timings``, on a Llama-3.2-1B-shaped model (Q4_0, Q8_0);
2. start-up: exec → /health 200 (the log read up to the listening line, then /health polled every millisecond),
   the ``llama-serve`` console script and ``python -m llama_serve`` as ``Server`` runs it vs the binary started
   directly, many alternating rounds, medians; and ``import llama_serve``;
3. roofline: the bytes one generated token reads (every weight tensor, from the GGUF, except the token-embedding
   table when the output matrix is separate — one row of it is read — plus the KV cache at the mean context) times
   tokens/s, against this machine's read bandwidth with every core (one thread per core summing its own slice).

Rounds alternate between the sides; medians and ratios go to ``benchmarks/results/server.md`` and a chart to
``server.png``.

    python benchmarks/bench_server.py [--rounds 3] [--startup-rounds 21] [--smoke]

``--smoke`` (used by the tests) runs every step once on the tiny generated model, with no native build:
both sides are then the bundled server.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from llama_serve import find_server_bin, testmodels
from llama_serve._launcher import DIE_WITH_PARENT
from llama_serve.server import Endpoint, Server

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONSOLE_SCRIPT = Path(sys.prefix) / "bin" / "llama-serve"
LISTENING = re.compile(r"listening on (\S+)")  # llama-server's log line with its bound address


def native_server(source: Path, build: Path) -> Path:
    """upstream llama-server, GGML_NATIVE=ON, built in a scratch dir from the provisioned source."""
    binary = build / "bin" / "llama-server"
    if not binary.is_file():
        flags = ["-DGGML_NATIVE=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_OPENSSL=OFF",
                 "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DCMAKE_BUILD_TYPE=Release"]
        subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", *flags], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-server"], check=True,
                       stdout=subprocess.DEVNULL)
    return binary


class CommandServer(Server):
    """A server started by another command (the native binary, or the bare bundled one) under the same
    process management as ours."""

    def __init__(self, command: list[str], *args: Any, **kwargs: Any) -> None:
        self.command_prefix = command
        super().__init__(*args, **kwargs)

    def _command(self, args: list[str]) -> list[str]:
        return [*self.command_prefix, *args]


def post(base_url: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(base_url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=3600) as resp:
        return json.load(resp)


def speed(srv: Server, n_prompt: int, n_gen: int, n_vocab: int) -> tuple[float, float]:
    """(prompt tokens/s, generated tokens/s) from one /completion's timings."""
    rng = random.Random(0)
    prompt = [rng.randrange(1000, min(n_vocab, 30000)) for _ in range(n_prompt)]
    result = post(srv.base_url, "/completion", {"prompt": prompt, "n_predict": n_gen, "temperature": 0,
                                                "cache_prompt": False, "ignore_eos": True})
    timings = result["timings"]
    return float(timings["prompt_per_second"]), float(timings["predicted_per_second"])


def startup_seconds(command: list[str], model: Path, env: Mapping[str, str] | None = None) -> float:
    """exec → /health 200: the log is read up to the listening line, then /health is polled every millisecond
    (``Server`` polls every 20 ms, too coarse to compare launchers)."""
    start = time.perf_counter()
    proc = subprocess.Popen([*command, "-m", str(model), "-c", "256", "--host", "127.0.0.1", "--port", "0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", env=env)
    try:
        assert proc.stdout is not None
        address = next((m.group(1) for m in map(LISTENING.search, proc.stdout) if m), None)
        if address is None:
            raise RuntimeError(f"{command} exited with {proc.wait()} before listening")
        probe = Endpoint(address)
        while probe.health() != 200:
            time.sleep(0.001)
        return time.perf_counter() - start
    finally:
        stop_now(proc)


def stop_now(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, and a second one if it is still running 2 s later: llama-server loses a SIGTERM that arrives between
    /health turning 200 and its task loop starting (start_loop() sets running = true over terminate()'s false);
    a second signal makes it exit at once."""
    for _ in range(2):
        proc.terminate()
        try:
            proc.wait(2)
            break
        except subprocess.TimeoutExpired:
            continue
    else:
        proc.kill()
        proc.wait()
    if proc.stdout:
        proc.stdout.close()


def memory_bandwidth(size_mib: int = 512, rounds: int = 5) -> tuple[float, float]:
    """(read, copy) bytes/s with every core: one thread per core on its own slice of a large array (numpy releases
    the GIL for these). Read sums the slice; copy counts the bytes read plus the bytes written. Best of ``rounds``."""
    cores = os.cpu_count() or 1
    src = np.ones(size_mib * 2**20 // 8)
    dst = np.empty_like(src)
    bounds = np.linspace(0, src.size, cores + 1).astype(int)
    slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]

    def best_seconds(work: Any) -> float:
        with ThreadPoolExecutor(cores) as pool:
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                list(pool.map(work, slices))
                times.append(time.perf_counter() - start)
        return min(times)

    read = best_seconds(lambda part: np.add.reduce(src[part]))
    copy = best_seconds(lambda part: np.copyto(dst[part], src[part]))
    return src.nbytes / read, 2 * src.nbytes / copy


@dataclass
class TokenBytes:
    """Bytes one generated token reads."""

    weights: int
    kv_cache: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache


def bytes_per_token(model: Path, context: int) -> TokenBytes:
    """Every weight tensor is read once per generated token, except the token-embedding table when the model has a
    separate output matrix (one row of it is read); the KV cache (F16, llama-server's default) at ``context`` tokens
    is read once per token too."""
    reader = gguf.GGUFReader(model)
    tensors = {t.name: t for t in reader.tensors}
    weights = sum(int(t.n_bytes) for t in reader.tensors)
    if "output.weight" in tensors:
        embd = tensors["token_embd.weight"]
        weights -= int(embd.n_bytes) - int(embd.n_bytes) // int(embd.shape[-1])

    def field(key: str) -> int:
        return int(reader.fields[f"{arch}.{key}"].contents())

    arch = str(reader.fields["general.architecture"].contents())
    head_dim = field("embedding_length") // field("attention.head_count")
    kv_cache = field("block_count") * 2 * field("attention.head_count_kv") * head_dim * 2 * context
    return TokenBytes(weights, kv_cache)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--startup-rounds", type=int, default=21)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--quants", default="Q4_0,Q8_0")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "server.md")
    args = parser.parse_args()
    threads = str(os.cpu_count() or 1)

    if args.smoke:
        models = {"tiny": testmodels.tiny_random()}
        ours_bin = native_bin = find_server_bin()
        n_prompt, n_gen, rounds, startup_rounds = 32, 8, 1, 3
    else:
        models = {q: testmodels.realistic(q) for q in args.quants.split(",")}
        source = ROOT / "vendor" / "llama.cpp"
        native_bin = native_server(source, Path.home() / ".cache" / "llama-serve" / "bench" / "native-b11312")
        ours_bin = find_server_bin()
        n_prompt, n_gen, rounds, startup_rounds = 512, 128, args.rounds, args.startup_rounds

    read_bandwidth, copy_bandwidth = memory_bandwidth(64 if args.smoke else 512)
    speeds: list[tuple[str, str, float, float]] = []  # (model, what, ours, native) tokens/s
    roofline: list[tuple[str, TokenBytes, float, float]] = []  # (model, bytes per token, ours, native) tokens/s
    for name, model in models.items():
        n_vocab = 32000 if args.smoke else 128256
        samples: dict[str, list[tuple[float, float]]] = {"ours": [], "native": []}
        settings: dict[str, Any] = {"ctx_size": n_prompt + n_gen + 64, "extra_args": ["-t", threads, "-np", "1"]}
        with Server(model, **settings) as ours, CommandServer([str(native_bin)], model, **settings) as native:
            speed(ours, 8, 2, n_vocab)
            speed(native, 8, 2, n_vocab)  # warm both
            for _ in range(rounds):
                samples["ours"].append(speed(ours, n_prompt, n_gen, n_vocab))
                samples["native"].append(speed(native, n_prompt, n_gen, n_vocab))
        for i, what in enumerate(("prompt processing", "generation")):
            speeds.append((name, what, statistics.median(s[i] for s in samples["ours"]),
                           statistics.median(s[i] for s in samples["native"])))
        roofline.append((name, bytes_per_token(model, n_prompt + n_gen // 2), speeds[-1][2], speeds[-1][3]))

    tiny = testmodels.tiny_random()
    launchers = {
        "binary": ([str(ours_bin)], None),
        "console script": ([str(CONSOLE_SCRIPT)], None),
        "Server's launcher": ([sys.executable, "-m", "llama_serve"], {**os.environ, DIE_WITH_PARENT: str(os.getpid())}),
    }
    startup: dict[str, list[float]] = {k: [] for k in launchers}
    for i in range(startup_rounds):
        order = list(launchers) if i % 2 == 0 else list(launchers)[::-1]
        for key in order:
            startup[key].append(startup_seconds(launchers[key][0], tiny, launchers[key][1]))
    bare = statistics.median(_run_seconds([sys.executable, "-c", "pass"]) for _ in range(11))
    imported = statistics.median(_run_seconds([sys.executable, "-c", "import llama_serve"]) for _ in range(11))

    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} cores, memory bandwidth with every core: read "
             f"{read_bandwidth / 1e9:.1f} GB/s, copy {copy_bandwidth / 1e9:.1f} GB/s (read + write); {rounds} rounds, "
             "medians, sides alternating.", "",
             "| measure | llama-serve (wheel) | native build | ratio |", "| --- | --- | --- | --- |"]
    for name, what, ours_value, native_value in speeds:
        lines.append(f"| {name} {what} (tokens/s) | {ours_value:.1f} | {native_value:.1f} | "
                     f"{ours_value / native_value:.3f} |")
    for name, per_token, ours_rate, native_rate in roofline:
        cells = [f"{per_token.total * rate / 1e9:.1f} GB/s = {per_token.total * rate / read_bandwidth:.2f}"
                 for rate in (ours_rate, native_rate)]
        lines.append(f"| {name} generation, bytes read/s ÷ read bandwidth ({per_token.total / 1e6:.0f} MB per token: "
                     f"{per_token.weights / 1e6:.0f} weights + {per_token.kv_cache / 1e6:.0f} KV cache) | "
                     f"{cells[0]} | {cells[1]} | |")
    binary = statistics.median(startup["binary"])
    labels = {"console script": "`llama-serve` console script",
              "Server's launcher": "`python -m llama_serve` with the parent-death signal (as `Server` runs it)"}
    for key, label in labels.items():
        ms = statistics.median(startup[key])
        lines.append(f"| start to /health 200, tiny model (ms, median of {startup_rounds}): {label} | "
                     f"{ms * 1000:.0f} | {binary * 1000:.0f} (bundled binary directly) | "
                     f"launcher overhead {(ms - binary) * 1000:.0f} ms |")
    lines.append(f"| `import llama_serve` (ms, over a bare interpreter) | {(imported - bare) * 1000:.0f} | | |")
    report = "\n".join(lines) + "\n"
    out = args.out if not args.smoke else args.out.with_name("server-smoke.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    chart(speeds, roofline, read_bandwidth, out.with_suffix(".png"))
    print(report)
    return 0


def chart(speeds: list[tuple[str, str, float, float]], roofline: list[tuple[str, TokenBytes, float, float]],
          bandwidth: float, path: Path) -> None:
    """Left: wheel ÷ native speed per measure; right: fraction of the read bandwidth generation uses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [3, 2]})
    labels = [f"{name} {what}" for name, what, _, _ in speeds]
    left.barh(labels, [ours / native for _, _, ours, native in speeds])
    left.axvline(1.0, color="gray", linestyle="--")
    left.set_xlabel("llama-serve wheel speed ÷ native build speed")
    left.invert_yaxis()
    names = [name for name, _, _, _ in roofline]
    positions = np.arange(len(names))
    for offset, side, native in ((-0.2, "wheel", False), (0.2, "native", True)):
        fractions = [per_token.total * (native_rate if native else ours_rate) / bandwidth
                     for _, per_token, ours_rate, native_rate in roofline]
        right.bar(positions + offset, fractions, 0.4, label=side)
    right.axhline(1.0, color="gray", linestyle="--")
    right.set_xticks(positions, [f"{n} generation" for n in names])
    right.set_ylabel("bytes read/s ÷ read bandwidth")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _run_seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    raise SystemExit(main())
