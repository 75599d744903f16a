"""The threading contract (see csrc/core.hpp): any method, any thread, any time, also during close()."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import llama_serve as ls

HERE = Path(__file__).resolve().parent


def test_decode_and_n_past_from_two_threads_do_not_deadlock(deterministic_model: Path) -> None:
    # Was a hang of the whole process: n_past waited for the context's lock holding the GIL while decode,
    # holding that lock, waited for the GIL to build its result.
    code = f"""
import threading, time, llama_serve as ls
m = ls.Model({str(deterministic_model)!r}); c = m.context(n_ctx=512, n_threads=1)
end = time.monotonic() + 3
def decoder():
    while time.monotonic() < end:
        c.clear(); c.decode([1, 2, 3, 4])
t = threading.Thread(target=decoder); t.start()
n = 0
while time.monotonic() < end:
    c.n_past(); n += 1
t.join(); print(n)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 100


def test_every_method_from_many_threads_with_random_close(deterministic_model: Path) -> None:
    out = subprocess.run([sys.executable, str(HERE / "stress_threads.py"), str(deterministic_model), "8", "1"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stderr[-3000:]}"
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["unexpected"] == []
    assert report["counts"]["ok"] > 500 and report["counts"].get("ClosedError", 0) > 0


def test_decode_all_checks_its_argument_before_decoding(deterministic_model: Path) -> None:
    with ls.Model(deterministic_model) as m, m.context(n_ctx=512, n_batch=8) as c:
        c.decode([1, 2])
        try:
            c.decode(list(range(1, 20)), all=True)
        except ValueError as e:
            assert "n_batch" in str(e)
        else:
            raise AssertionError("all=True with more than n_batch ids must raise")
        assert c.n_past() == 2  # the failed call changed nothing


def test_sampler_after_its_model_closed(deterministic_model: Path) -> None:
    m = ls.Model(deterministic_model)
    sampler = ls.Sampler(temperature=0.5).bind(m._native)
    m.close()
    for call in (sampler.reset, lambda: repr(sampler), lambda: sampler.accept(1)):
        try:
            call()
        except ls.ClosedError:
            continue
        raise AssertionError("a sampler of a closed model must raise ClosedError")


def test_pool_hands_out_a_live_replica_while_another_restarts(deterministic_model: Path) -> None:
    with ls.ServerPool(deterministic_model, replicas=2, ctx_size=256) as pool:
        pool.servers[0].proc.kill()
        pool.servers[0].proc.wait()
        restarting = threading.Thread(target=lambda: pool.session().__enter__())
        restarting.start()  # finds replica 0 dead and restarts it (a whole server start)
        time.sleep(0.05)
        start = time.monotonic()
        with pool.session() as endpoint:
            waited = time.monotonic() - start
            assert endpoint is pool.servers[1]
        restarting.join()
        assert waited < 0.5, f"a session waited {waited:.2f} s for another replica's restart"
        assert pool.restarts == 1 and all(s.running for s in pool.servers)
