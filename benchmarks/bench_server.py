"""The bundled server against upstream's llama-server built natively from the same source, in one run.

1. portable wheel vs native (GGML_NATIVE=ON) build: prompt processing (512-token prompt) and generation
   (128 tokens), tokens/s from the server's own ``timings``, on a Llama-3.2-1B-shaped model (Q4_0, Q8_0);
2. start-up: exec → /health 200, ``llama-serve`` vs the binary started directly, and ``import llama_serve``;
3. roofline: this machine's memory bandwidth (a large copy) vs the bytes generation streams per second.

Rounds alternate between the sides; medians and ratios go to ``benchmarks/results/server.md`` (+ ``.png``).

    python benchmarks/bench_server.py [--rounds 3] [--smoke]

``--smoke`` (used by the tests) runs every step once on the tiny generated model, with no native build:
both sides are then the bundled server.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from llama_serve import find_server_bin, testmodels
from llama_serve.server import Server

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONSOLE_SCRIPT = Path(sys.prefix) / "bin" / "llama-serve"


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


def startup_seconds(command: list[str], model: Path) -> float:
    start = time.perf_counter()
    srv = CommandServer(command, model, ctx_size=256)
    elapsed = time.perf_counter() - start
    srv.stop()
    return elapsed


def memory_bandwidth(size_mib: int = 512, rounds: int = 5) -> float:
    """Bytes/s of a large copy (read + write)."""
    src = np.ones(size_mib * 2**20 // 8)
    dst = np.empty_like(src)
    best = min(_timed_copy(src, dst) for _ in range(rounds))
    return 2 * src.nbytes / best


def _timed_copy(src: np.ndarray, dst: np.ndarray) -> float:
    start = time.perf_counter()
    np.copyto(dst, src)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--quants", default="Q4_0,Q8_0")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "server.md")
    args = parser.parse_args()
    threads = str(os.cpu_count() or 1)

    if args.smoke:
        models = {"tiny": testmodels.tiny_random()}
        ours_bin = native_bin = find_server_bin()
        n_prompt, n_gen, rounds = 32, 8, 1
    else:
        models = {q: testmodels.realistic(q) for q in args.quants.split(",")}
        source = ROOT / "vendor" / "llama.cpp"
        native_bin = native_server(source, Path.home() / ".cache" / "llama-serve" / "bench" / "native-b11312")
        ours_bin = find_server_bin()
        n_prompt, n_gen, rounds = 512, 128, args.rounds

    rows: list[tuple[str, float, float]] = []
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
            ours_med = statistics.median(s[i] for s in samples["ours"])
            native_med = statistics.median(s[i] for s in samples["native"])
            rows.append((f"{name} {what} (tokens/s)", ours_med, native_med))
        if name != "tiny":
            gen = statistics.median(s[1] for s in samples["ours"])
            rows.append((f"{name} generation bytes/s ÷ memory bandwidth", model.stat().st_size * gen, 0.0))

    tiny = testmodels.tiny_random()
    start_ours, start_native = [], []
    for _ in range(max(rounds, 3)):
        start_ours.append(startup_seconds([str(CONSOLE_SCRIPT)], tiny))
        start_native.append(startup_seconds([str(ours_bin)], tiny))
    bare = statistics.median(_run_seconds([sys.executable, "-c", "pass"]) for _ in range(5))
    imported = statistics.median(_run_seconds([sys.executable, "-c", "import llama_serve"]) for _ in range(5))
    bandwidth = memory_bandwidth(64 if args.smoke else 512)

    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} cores, memory copy bandwidth "
             f"{bandwidth / 1e9:.1f} GB/s; {rounds} rounds, medians, sides alternating.", "",
             "| measure | llama-serve (wheel) | native build | ratio |", "| --- | --- | --- | --- |"]
    for label, ours_value, native_value in rows:
        if native_value:
            lines.append(f"| {label} | {ours_value:.1f} | {native_value:.1f} | {ours_value / native_value:.3f} |")
        else:
            lines.append(f"| {label} | {ours_value / 1e9:.2f} GB/s | | {ours_value / bandwidth:.2f} of bandwidth |")
    launcher_ms = (statistics.median(start_ours) - statistics.median(start_native)) * 1000
    lines += [f"| start to /health 200 (s) | {statistics.median(start_ours):.3f} | "
              f"{statistics.median(start_native):.3f} (binary directly) | launcher overhead {launcher_ms:.0f} ms |",
              f"| `import llama_serve` (ms, over a bare interpreter) | {(imported - bare) * 1000:.0f} | | |"]
    report = "\n".join(lines) + "\n"
    out = args.out if not args.smoke else args.out.with_name("server-smoke.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    return 0


def _run_seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    raise SystemExit(main())
