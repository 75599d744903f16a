"""llama_serve.Server / connect / ServerPool: real processes, real clients."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

import llama_serve as ls
from serverproc import gone, outlives_a_killed_parent

HELLO = 15043
BURN_CPU = "import time\nend = time.time() + 60\nwhile time.time() < end: pass"  # bounded load


def test_spawn_use_and_stop(deterministic_model: Path) -> None:
    with ls.Server(deterministic_model, ctx_size=512, parallel=2, alias="det") as srv:
        assert srv.base_url.startswith("http://127.0.0.1:")
        assert srv.health() == 200 and srv.model_id == "det"
        assert len(srv.slots()) == 2
        assert "default_generation_settings" in srv.props()
        done = srv.openai().completions.create(model="det", prompt="Hello", max_tokens=4, temperature=0)
        assert done.usage is not None and done.usage.completion_tokens == 4
        per_response = ls.timings(done)
        assert per_response["predicted_n"] == 4 and per_response["predicted_per_second"] > 0
        metrics = srv.metrics()
        assert metrics.tokens_predicted_total >= 4 and metrics.prompt_tokens_total >= 1
        assert "n_decode_total" in metrics.raw
        assert any("listening on" in line for line in srv.logs())
        pid = srv.pid
    assert not srv.running and gone(pid)


def test_stop_right_after_start_is_prompt_under_load(deterministic_model: Path) -> None:
    """A SIGTERM between the server's ready line and its task loop was lost upstream (the loop reset the flag),
    so stop() waited out its grace (10 s) and killed: about 1 stop in 30 on a loaded machine before
    patches/0005. Each stop must now end the server by itself, at once, with exit code 0."""
    burn = [subprocess.Popen([sys.executable, "-c", BURN_CPU]) for _ in range(os.cpu_count() or 2)]
    try:
        for _ in range(30):
            srv = ls.Server(deterministic_model, ctx_size=256, grace=5.0)
            start = time.monotonic()
            assert srv.stop() == 0
            assert time.monotonic() - start < 3.0
    finally:
        for proc in burn:
            proc.kill()
            proc.wait()


def test_finalizer_stops_a_forgotten_server(deterministic_model: Path) -> None:
    srv = ls.Server(deterministic_model, ctx_size=256)
    pid = srv.pid
    del srv
    gc.collect()
    assert gone(pid)


def test_early_exit_is_diagnosed(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(512))
    with pytest.raises(ls.ServerError) as info:
        ls.Server(bad, start_timeout=60)
    assert info.value.returncode not in (None, 0)
    assert any("model" in line.lower() for line in info.value.log_tail), info.value.log_tail


def test_port_in_use_is_a_clear_error(deterministic_model: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ls.ServerError, match="bind"):
            ls.Server(deterministic_model, port=taken.getsockname()[1], start_timeout=60)


def test_server_dies_with_a_killed_parent(deterministic_model: Path) -> None:
    assert not outlives_a_killed_parent(f"child = ls.Server({str(deterministic_model)!r}, ctx_size=256)"), \
        "server outlived its SIGKILLed parent"


def test_connect_with_and_without_api_key(deterministic_model: Path) -> None:
    with ls.Server(deterministic_model, ctx_size=256, api_key="s3cret", alias="det") as srv:
        assert ls.connect(srv.base_url, api_key="s3cret").model_id == "det"
        anonymous = ls.connect(srv.base_url)
        with pytest.raises(ls.ServerError, match="401"):
            anonymous.model_id  # noqa: B018
        with pytest.raises(openai.AuthenticationError):
            anonymous.openai(max_retries=0).models.list()
        assert srv.openai().models.list().data[0].id == "det"


def test_concurrent_async_sessions(deterministic_model: Path) -> None:
    async def run(srv: ls.Server) -> list[str]:
        client = srv.async_openai()
        replies = await asyncio.gather(*(client.completions.create(model="det", prompt="Hello", max_tokens=5,
                                                                   temperature=0) for _ in range(6)))
        return [r.choices[0].text for r in replies]

    with ls.Server(deterministic_model, ctx_size=1024, parallel=4, alias="det") as srv:
        texts = asyncio.run(run(srv))
        assert srv.metrics().tokens_predicted_total >= 30
    assert len(set(texts)) == 1 and texts[0]


def test_pool_spreads_sessions_and_restarts_a_killed_replica(deterministic_model: Path) -> None:
    with ls.ServerPool(deterministic_model, replicas=2, ctx_size=256, alias="det") as pool:
        with pool.session() as a, pool.session() as b:
            assert a.base_url != b.base_url  # least busy: the second session goes to the idle replica
        victim = pool.servers[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.proc.wait(10)
        with pool.session() as s:
            assert s.openai().completions.create(model="det", prompt="Hello", max_tokens=2).choices
        assert pool.restarts == 1 and all(server.running for server in pool.servers)
        with pytest.raises(openai.APIConnectionError):
            ls.connect(victim.base_url).openai(max_retries=0, timeout=5).models.list()
