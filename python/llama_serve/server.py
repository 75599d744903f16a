"""Run the bundled server from Python (``Server``) or talk to a running one (``connect``).

A ``Server`` is a child process with a race-free port (``--port 0``, the bound address read from its
log), a health-checked start, captured logs, and no orphans (see ``_process``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._process import ManagedProcess
from ._process import ServerError as ServerError  # re-exported
from .hub import resolve
from .metrics import Metrics

if TYPE_CHECKING:
    import openai as openai_sdk  # the methods below are named openai

log = logging.getLogger("llama_serve.server")


class Endpoint:
    """A llama.cpp server reached over HTTP: clients, health, props, slots, metrics."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def _request(self, path: str, *, timeout: float | None = None, body: Any = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _json(self, path: str, body: Any = None) -> Any:
        """GET ``path`` (POST ``body`` as JSON when given); the decoded JSON answer, ServerError unless 200."""
        status, answer = self._request(path, body=body)
        if status != 200:
            method = "GET" if body is None else "POST"
            raise ServerError(f"{method} {path} -> HTTP {status}: {answer[:500].decode(errors='replace')}")
        return json.loads(answer)

    def health(self) -> int:
        """HTTP status of /health: 200 ready, 503 loading."""
        try:
            return self._request("/health", timeout=5)[0]
        except OSError:
            return 0

    def props(self) -> dict[str, Any]:
        return dict(self._json("/props"))

    def slots(self) -> list[dict[str, Any]]:
        return list(self._json("/slots"))

    def metrics(self) -> Metrics:
        status, body = self._request("/metrics")
        if status != 200:
            raise ServerError(f"GET /metrics -> HTTP {status} (start the server with --metrics)")
        return Metrics.parse(body.decode())

    @property
    def model_id(self) -> str:
        return str(self._json("/v1/models")["data"][0]["id"])

    def openai(self, **kwargs: Any) -> openai_sdk.OpenAI:
        """The official client, pointed at this server."""
        import openai

        return openai.OpenAI(base_url=self.base_url + "/v1", api_key=self.api_key or "no-key", **kwargs)

    def async_openai(self, **kwargs: Any) -> openai_sdk.AsyncOpenAI:
        import openai

        return openai.AsyncOpenAI(base_url=self.base_url + "/v1", api_key=self.api_key or "no-key", **kwargs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url}>"


def connect(base_url: str, api_key: str | None = None, *, timeout: float = 600.0) -> Endpoint:
    """A running server (no process of ours): the same surface as :class:`Server`."""
    return Endpoint(base_url, api_key, timeout)


class Server(ManagedProcess, Endpoint):
    """Spawn ``llama-serve`` on ``model``; ready when this returns. Extra flags pass through untouched.

    ``rpc``: ``host:port`` of RPC workers (``RpcWorker.endpoint``, or ``llama-serve-rpc`` on other
    machines) to split the model's layers across, with ``n_gpu_layers``.
    """

    what = "llama-server"

    def __init__(self, model: str | os.PathLike[str] | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 ctx_size: int | None = None, parallel: int | None = None, n_gpu_layers: int | None = None,
                 api_key: str | None = None, alias: str | None = None, rpc: Sequence[str] | None = None,
                 extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None, start_timeout: float = 300.0,
                 log_lines: int = 1000, grace: float = 10.0) -> None:
        args: list[str] = []
        if model is not None:  # a path or hf:author/repo/revision/file, downloaded here (progress in this process)
            args += ["-m", str(resolve(model, token=os.environ.get("HF_TOKEN")).model)]
        if rpc is not None:
            args += ["--rpc", ",".join(rpc)]
        for flag, value in (("-c", ctx_size), ("-np", parallel), ("-ngl", n_gpu_layers), ("--alias", alias),
                            ("--api-key", api_key)):
            if value is not None:
                args += [flag, str(value)]
        args += ["--metrics", *extra_args, "--host", host, "--port", str(port)]
        ManagedProcess.__init__(self, args, env=env, start_timeout=start_timeout, log_lines=log_lines, grace=grace)
        Endpoint.__init__(self, self.address, api_key)

    def _command(self, args: list[str]) -> list[str]:
        """argv of the child: our launcher (which sets the parent-death signal, then execs the server)."""
        return [sys.executable, "-m", "llama_serve", *args]

    def _ready(self, deadline: float) -> None:
        probe = Endpoint(self.address)
        while probe.health() != 200:
            self._check_starting(deadline, "not healthy")
            time.sleep(0.02)


class ServerPool:
    """``replicas`` server processes on one model; each session goes to the least busy live replica.

    Use a pool when requests must not share one process (isolation, one GPU per replica via ``envs``,
    a crash taking down only its own sessions). For throughput on one device, prefer a single server
    with ``parallel=N``: continuous batching shares one copy of the weights across N slots.
    A replica found dead is restarted when the next session is handed out; sessions that were on it
    get a connection error from their client, not a hang.
    """

    def __init__(self, model: str | os.PathLike[str], replicas: int = 2, *,
                 envs: Sequence[Mapping[str, str]] | None = None, **server_kwargs: Any) -> None:
        if replicas < 1:
            raise ValueError("a pool needs at least one replica")
        if envs is not None and len(envs) != replicas:
            raise ValueError("envs needs one mapping per replica")
        self._model = model
        self._envs = list(envs) if envs is not None else [{} for _ in range(replicas)]
        self._kwargs = server_kwargs
        self._changed = threading.Condition()  # guards servers, _busy, _restarting; never held over a start
        self._busy = [0] * replicas
        self._restarting: set[int] = set()
        self.restarts = 0
        self.servers: list[Server] = []
        try:
            for i in range(replicas):
                self.servers.append(self._start(i))
        except BaseException:
            self.close()
            raise

    def _start(self, i: int) -> Server:
        return Server(self._model, env=self._envs[i], **self._kwargs)

    def _restart(self, i: int) -> None:
        """Replace dead replica ``i`` (claimed in ``_restarting``), without holding the pool's lock."""
        dead = self.servers[i]
        log.warning("replica %d (pid %d) died (exit %s); restarting", i, dead.pid, dead.proc.returncode)
        server = self._start(i)
        with self._changed:
            self.servers[i] = server
            self.restarts += 1

    def _acquire(self) -> tuple[int, Server]:
        """The least busy live replica, counted busy. A caller that finds replicas dead restarts them first
        (other callers meanwhile get the live ones); with none live, wait for a restart."""
        while True:
            with self._changed:
                dead = [i for i, s in enumerate(self.servers) if i not in self._restarting and not s.running]
                self._restarting.update(dead)
                if not dead:
                    live = [i for i in range(len(self.servers)) if i not in self._restarting]
                    if live:
                        index = min(live, key=self._busy.__getitem__)
                        self._busy[index] += 1
                        return index, self.servers[index]
                    self._changed.wait()
                    continue
            try:
                for i in dead:
                    self._restart(i)
            finally:
                with self._changed:
                    self._restarting.difference_update(dead)
                    self._changed.notify_all()

    @contextlib.contextmanager
    def session(self) -> Iterator[Endpoint]:
        """An endpoint on the least busy live replica, held for the ``with`` block."""
        index, server = self._acquire()
        try:
            yield server
        finally:
            with self._changed:
                self._busy[index] -= 1

    def close(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> ServerPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
