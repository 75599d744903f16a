"""llama.cpp's RPC backend, shipped and driven: real workers (in network namespaces when this machine lets
the test make them), a real server splitting the model across them, faults by SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

import llama_serve as ls
from llama_serve.rpc import bind_warning
from serverproc import gone, greedy_tokens, outlives_a_killed_parent

HELLO = 15043
BIN = Path(sys.executable).parent


class Host:
    """A place to run a worker: a network namespace joined to this one by a veth pair, or (where
    namespaces cannot be made) a loopback address of this machine."""

    def __init__(self, index: int) -> None:
        self.namespace = f"lsrpc{os.getpid() % 10000}-{index}"
        outside, inside = f"lsr{os.getpid() % 10000}h{index}", f"lsr{os.getpid() % 10000}n{index}"
        subnet = f"10.231.{index}"
        commands = [
            ["ip", "netns", "add", self.namespace],
            ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", self.namespace],
            ["ip", "addr", "add", f"{subnet}.1/24", "dev", outside],
            ["ip", "link", "set", outside, "up"],
            ["ip", "-n", self.namespace, "addr", "add", f"{subnet}.2/24", "dev", inside],
            ["ip", "-n", self.namespace, "link", "set", inside, "up"],
            ["ip", "-n", self.namespace, "link", "set", "lo", "up"],
        ]
        self.isolated = all(subprocess.run(c, capture_output=True).returncode == 0 for c in commands)
        if not self.isolated:
            self.remove()
        self.address = f"{subnet}.2" if self.isolated else f"127.0.0.{index + 1}"

    def remove(self) -> None:  # deleting the namespace deletes its end of the veth pair, and so both ends
        subprocess.run(["ip", "netns", "delete", self.namespace], capture_output=True)


class NamespacedWorker(ls.RpcWorker):
    def __init__(self, host: Host) -> None:
        self.host = host
        super().__init__(host=host.address)

    def _command(self, args: list[str]) -> list[str]:
        prefix = ["ip", "netns", "exec", self.host.namespace] if self.host.isolated else []
        return [*prefix, *super()._command(args)]


@pytest.fixture(scope="module")
def hosts() -> Iterator[list[Host]]:
    made = [Host(1), Host(2)]
    if not all(h.isolated for h in made):
        print("network namespaces unavailable here: workers on loopback addresses", made[0].address, made[1].address)
    yield made
    for host in made:
        host.remove()


def test_worker_binds_a_free_port_and_reports_it() -> None:
    with ls.RpcWorker(threads=1) as worker:
        host, port = worker.endpoint.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        socket.create_connection((host, int(port)), timeout=5).close()
        assert any("CPU" in line for line in worker.logs()), worker.logs()
        pid = worker.pid
    assert gone(pid)


def test_worker_command_line_errors_exit_nonzero() -> None:
    """Our patch: upstream exits 0 on an unknown flag, aborts on a non-numeric port, returns 0 when the port
    is taken, and refuses port 0."""
    cli = str(BIN / "llama-serve-rpc")
    for args, message in ((["--bogus"], "unknown argument"), (["--port", "abc"], "take a number")):
        result = subprocess.run([cli, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and message in result.stderr, result.stderr
    with ls.RpcWorker() as worker:
        port = worker.endpoint.rsplit(":", 1)[1]
        result = subprocess.run([cli, "--port", port], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and "Address already in use" in result.stderr, result.stderr


def test_binding_beyond_loopback_warns() -> None:
    result = subprocess.run([str(BIN / "llama-serve-rpc"), "--host", "0.0.0.0", "--bogus"],
                            capture_output=True, text=True, timeout=60)
    assert "no authentication" in result.stderr and "SSH tunnel" in result.stderr
    assert bind_warning(["--host", "127.0.0.2"]) is None


def test_list_devices_shows_the_workers() -> None:
    with ls.RpcWorker() as w1, ls.RpcWorker() as w2:
        result = subprocess.run([str(BIN / "llama-serve"), "--list-devices", "--rpc", f"{w1.endpoint},{w2.endpoint}"],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert w1.endpoint in result.stdout and w2.endpoint in result.stdout, result.stdout


def test_unreachable_worker_is_a_clear_error(deterministic_model: Path) -> None:
    with socket.socket() as closed:  # bound, not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{closed.getsockname()[1]}"
        with pytest.raises(ls.ServerError) as info:
            ls.Server(deterministic_model, rpc=[endpoint], n_gpu_layers=99, start_timeout=60)
    assert info.value.returncode == 2
    assert any(f"RPC worker {endpoint} is not reachable" in line for line in info.value.log_tail)


def test_split_across_two_hosts_equals_local(hosts: list[Host], deterministic_model: Path,
                                             random_model: Path) -> None:
    with NamespacedWorker(hosts[0]) as w1, NamespacedWorker(hosts[1]) as w2:
        assert w1.endpoint.startswith(hosts[0].address + ":") and w2.endpoint.startswith(hosts[1].address + ":")
        for model in (deterministic_model, random_model):
            with ls.Server(model, ctx_size=256) as local:
                expected = greedy_tokens(local.base_url, timeout=120)
            with ls.Server(model, ctx_size=256, rpc=[w1.endpoint, w2.endpoint], n_gpu_layers=99,
                           extra_args=["--verbose"]) as split:
                assert greedy_tokens(split.base_url, timeout=120) == expected
                placed = "\n".join(split.logs())  # layers on both workers, none left on this host's CPU
                assert "assigned to device RPC0" in placed and "assigned to device RPC1" in placed, placed[-3000:]
                assert "assigned to device CPU" not in placed
            if model == deterministic_model:
                assert expected == list(range(HELLO + 1, HELLO + 17))


def test_a_worker_killed_mid_generation_fails_the_request_fast(random_model: Path) -> None:
    with ls.RpcWorker() as w1, ls.RpcWorker() as w2:
        with ls.Server(random_model, ctx_size=4096, rpc=[w1.endpoint, w2.endpoint], n_gpu_layers=99,
                       env={"GGML_NO_BACKTRACE": "1"}) as srv:
            client = srv.openai(max_retries=0, timeout=60)
            stream = client.completions.create(model="m", prompt="Hello", max_tokens=4000, temperature=0, stream=True,
                                               extra_body={"ignore_eos": True})
            killed_at = 0.0
            with pytest.raises(openai.APIConnectionError):
                for i, _ in enumerate(stream):
                    if i == 10:
                        os.kill(w2.pid, signal.SIGKILL)
                        killed_at = time.monotonic()
            assert killed_at and time.monotonic() - killed_at < 10
            srv.proc.wait(10)  # upstream aborts on a lost worker: the server is gone, not hung
            assert not srv.running and srv.health() == 0
            assert any("Remote RPC server crashed" in line for line in srv.logs())
        # Recovery: a new server on the surviving worker and a fresh one.
        with ls.RpcWorker() as w3, ls.Server(random_model, ctx_size=256, rpc=[w1.endpoint, w3.endpoint],
                                             n_gpu_layers=99) as again:
            assert len(greedy_tokens(again.base_url, 4, timeout=120)) == 4


def test_workers_die_with_a_killed_parent() -> None:
    assert not outlives_a_killed_parent("child = ls.RpcWorker()"), "worker outlived its SIGKILLed parent"


def test_rpc_benchmark_smoke(tmp_path: Path) -> None:
    """benchmarks/bench_rpc.py once on the tiny model, so it cannot rot (no timing asserted)."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "benchmarks/bench_rpc.py", "--smoke", "--out", str(tmp_path / "rpc.md")],
                            cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "split over 2 RPC workers" in (tmp_path / "rpc-smoke.md").read_text()
