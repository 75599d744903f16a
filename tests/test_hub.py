"""Model references through the real huggingface_hub client against a local Hub (HF_ENDPOINT)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakehub import TOKEN, FakeHub
from serverproc import ServerProcess

HELLO = 15043


@pytest.fixture
def hub(deterministic_model: Path) -> Iterator[FakeHub]:
    weights = deterministic_model.read_bytes()
    fake = FakeHub()
    fake.repos["acme/tiny-GGUF"] = {"tiny-Q8_0.gguf": weights, "tiny-F32.gguf": weights, "README.md": b"hi"}
    fake.repos["acme/vision-GGUF"] = {"vis-Q4_K_M.gguf": weights, "mmproj-vis-f16.gguf": b"GGUFproj"}
    fake.repos["acme/split-GGUF"] = {"big-Q4_0-00001-of-00002.gguf": weights[:1000],
                                     "big-Q4_0-00002-of-00002.gguf": weights[1000:]}
    fake.repos["acme/ambiguous-GGUF"] = {"a-Q4_0.gguf": b"GGUF", "b-Q4_0.gguf": b"GGUF"}
    fake.repos["acme/gated-GGUF"] = {"g-Q8_0.gguf": weights}
    fake.gated.add("acme/gated-GGUF")
    yield fake
    fake.close()


def hub_env(hub: FakeHub, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LLAMA_ARG_"))}
    return {**env, "HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", **extra}


def resolve_in_child(env: dict[str, str], call: str) -> dict[str, object]:
    """Run a resolver call in a fresh interpreter (huggingface_hub reads its settings at import)."""
    script = (f"import json, llama_serve.hub as h\ntry:\n    r = {call}\n    print(json.dumps({{'model': str(r.model), "
              f"'mmproj': str(r.mmproj) if r.mmproj else None}}))\nexcept h.ModelReferenceError as e:\n"
              f"    print(json.dumps({{'error': str(e)}}))")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_cli_serves_a_hub_model_by_quant(hub: FakeHub, tmp_path: Path) -> None:
    env = hub_env(hub, tmp_path)
    with ServerProcess("-hf", "acme/tiny-GGUF:Q8_0", "-c", "256", env=env) as srv:
        srv.wait_healthy()
        body = json.dumps({"prompt": "Hello", "n_predict": 3, "temperature": 0, "return_tokens": True}).encode()
        import urllib.request

        request = urllib.request.Request(srv.base_url + "/completion", data=body)
        with urllib.request.urlopen(request, timeout=30) as resp:
            assert json.load(resp)["tokens"] == [HELLO + 1, HELLO + 2, HELLO + 3]
    assert "GET /acme/tiny-GGUF/resolve/main/tiny-Q8_0.gguf" in hub.requests
    assert not any("tiny-F32" in r for r in hub.requests)
    cached = list((tmp_path / "hub").glob("models--acme--tiny-GGUF/snapshots/*/tiny-Q8_0.gguf"))
    assert cached, "not in huggingface_hub's standard cache"


def test_hf_uri_form_and_python_server(hub: FakeHub, tmp_path: Path) -> None:
    env = hub_env(hub, tmp_path)
    script = ("import llama_serve as ls\nwith ls.Server('hf:acme/tiny-GGUF/main/tiny-F32.gguf', ctx_size=256) as s:\n"
              "    print(s.health())")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("200"), out.stderr[-2000:]


def test_mmproj_and_split_shards(hub: FakeHub, tmp_path: Path) -> None:
    env = hub_env(hub, tmp_path)
    vision = resolve_in_child(env, "h.resolve_repo('acme/vision-GGUF')")
    assert str(vision["model"]).endswith("vis-Q4_K_M.gguf") and str(vision["mmproj"]).endswith("mmproj-vis-f16.gguf")
    split = resolve_in_child(env, "h.resolve_repo('acme/split-GGUF:Q4_0')")
    first = Path(str(split["model"]))
    assert first.name == "big-Q4_0-00001-of-00002.gguf"
    assert (first.parent / "big-Q4_0-00002-of-00002.gguf").is_file()


@pytest.mark.parametrize(("call", "message"), [
    ("h.resolve_repo('acme/nothing-here')", "repository not found"),
    ("h.resolve('hf:acme/tiny-GGUF/main/missing.gguf')", "file not found"),
    ("h.resolve('hf:acme/tiny-GGUF/v9/tiny-F32.gguf')", "revision not found"),
    ("h.resolve_repo('acme/ambiguous-GGUF:Q4_0')", "ambiguous"),
    ("h.resolve_repo('acme/tiny-GGUF:Q2_K')", "no GGUF for quant Q2_K"),
    ("h.resolve_repo('acme/gated-GGUF')", "gated"),
])
def test_clear_errors(hub: FakeHub, tmp_path: Path, call: str, message: str) -> None:
    assert message in str(resolve_in_child(hub_env(hub, tmp_path), call).get("error")), call


def test_gated_with_token(hub: FakeHub, tmp_path: Path) -> None:
    result = resolve_in_child(hub_env(hub, tmp_path, HF_TOKEN=TOKEN), "h.resolve_repo('acme/gated-GGUF')")
    assert str(result["model"]).endswith("g-Q8_0.gguf")


def test_offline_uses_the_cache_or_says_why(hub: FakeHub, tmp_path: Path) -> None:
    online = resolve_in_child(hub_env(hub, tmp_path), "h.resolve('hf:acme/tiny-GGUF/main/tiny-Q8_0.gguf')")
    hub.close()  # nothing to reach any more
    offline_env = hub_env(hub, tmp_path, HF_HUB_OFFLINE="1")
    cached = resolve_in_child(offline_env, "h.resolve('hf:acme/tiny-GGUF/main/tiny-Q8_0.gguf')")
    assert cached["model"] == online["model"]
    missing = resolve_in_child(offline_env, "h.resolve('hf:acme/tiny-GGUF/main/tiny-F32.gguf')")
    assert "offline" in str(missing.get("error"))


def test_cli_reports_a_bad_reference(hub: FakeHub, tmp_path: Path) -> None:
    out = subprocess.run([str(Path(sys.prefix) / "bin" / "llama-serve"), "-hf", "acme/nothing-here"],
                         env=hub_env(hub, tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "repository not found" in out.stderr
