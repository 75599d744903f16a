"""Fuzzing the bindings (tests/fuzz_core.py) in a child process, so a crash is seen, not suffered:
≥ 100 mutated GGUF files, and an atheris run over tokenize/detokenize/decode/grammar/JSON schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE.parent / "build" / "test-artifacts"


def run_fuzzer(*args: str) -> dict[str, object]:
    result = subprocess.run([sys.executable, str(HERE / "fuzz_core.py"), *args], capture_output=True, text=True,
                            timeout=600)
    last_case = [line for line in result.stdout.splitlines() if line.startswith("case ")][-1:]
    assert result.returncode == 0, f"fuzzer died ({result.returncode}) at {last_case}: {result.stderr[-3000:]}"
    summary: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"fuzz-{args[0]}.json").write_text(json.dumps(summary, indent=1))
    return summary


def test_mutated_gguf_files_load_or_raise(random_model: Path) -> None:
    summary = run_fuzzer("gguf", str(random_model), "--cases", "150", "--seed", "0")
    outcomes = summary["outcomes"]
    assert summary["cases"] == 150 and isinstance(outcomes, dict)
    assert set(outcomes) <= {"ok"} | {k for k in outcomes if k.startswith("LlamaError: failed to load model")}, outcomes


def test_atheris_fuzzing_of_the_primitives(deterministic_model: Path) -> None:
    pytest.importorskip("atheris", reason="atheris (test extra, Linux) is not installed")
    summary = run_fuzzer("atheris", str(deterministic_model), "-atheris_runs=20000", "-seed=1", "-max_len=2048")
    outcomes = summary["outcomes"]
    assert summary["cases"] == 20000 and isinstance(outcomes, dict)
    # Each operation ends in a result or in its documented exception (never TypeError for a str argument).
    allowed = {
        "tokenize-bytes": {"ok", "UnicodeDecodeError"},
        "tokenize-str": {"ok", "UnicodeEncodeError"},
        "detokenize": {"ok", "ValueError"},
        "decode": {"ok", "ValueError", "ContextOverflowError"},
        "grammar": {"ok", "ValueError", "UnicodeEncodeError"},
        "json-schema": {"ok", "ValueError", "UnicodeEncodeError"},
        "token-to-piece": {"ok", "ValueError"},
    }
    for key in outcomes:
        op, result = key.split(" ", 1)
        assert result in allowed[op], f"{key}: {outcomes}"
