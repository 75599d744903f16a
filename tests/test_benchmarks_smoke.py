"""Each benchmark runs once on tiny inputs, so the suite in benchmarks/ cannot rot (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def test_server_benchmark_smoke(tmp_path: Path) -> None:
    out = run("benchmarks/bench_server.py", "--smoke", "--out", str(tmp_path / "server.md"))
    assert "generation (tokens/s)" in out and "launcher overhead" in out and "read bandwidth" in out
    assert (tmp_path / "server-smoke.md").is_file() and (tmp_path / "server-smoke.png").stat().st_size > 0


def test_concurrency_benchmark_smoke(tmp_path: Path) -> None:
    """Both servers where the llama-cpp-python venv of benchmarks/setup_peers.sh exists, else llama-serve alone."""
    out = run("benchmarks/bench_concurrency.py", "--smoke", "--out", str(tmp_path / "concurrency.md"))
    assert "| 8 |" in out and "Every request generated the requested tokens." in out
    assert (tmp_path / "concurrency-smoke.png").stat().st_size > 0


def test_primitives_benchmark_smoke(tmp_path: Path) -> None:
    out = run("benchmarks/bench_primitives.py", "--rounds", "1", "--out", str(tmp_path / "primitives.md"))
    assert "tokenize_calls" in out and "tokenize_batch" in out


def test_chat_benchmark_smoke(tmp_path: Path) -> None:
    out = run("benchmarks/bench_chat.py", "--smoke", "--out", str(tmp_path / "chat.md"))
    assert "| 3 |" in out and "4 chats in parallel" in out and "overhead per one-token turn" in out
