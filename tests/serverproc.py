"""Start the bundled server through the ``llama-serve`` console script, for tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from types import TracebackType

CONSOLE_SCRIPT = Path(sys.prefix) / "bin" / "llama-serve"
LISTENING = re.compile(r"listening on (http://\S+)")


def greedy_tokens(base_url: str, n: int = 16, timeout: float = 600) -> list[int]:
    """Token ids of a greedy /completion of "Hello" (``n`` tokens) from the server at ``base_url``."""
    import json

    body = {"prompt": "Hello", "n_predict": n, "temperature": 0, "return_tokens": True, "cache_prompt": False}
    request = urllib.request.Request(base_url + "/completion", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return list(json.load(resp)["tokens"])


def backend_devices(backend: str, env: dict[str, str] | None = None) -> list[dict[str, object]]:
    """``backend``'s devices as a fresh process sees them (ggml loads backends once per process)."""
    import json

    code = "import json, llama_serve; print(json.dumps(llama_serve.devices()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **(env or {})})
    return [d for d in json.loads(out.stdout or "[]") if str(d["backend"]).lower() == backend.lower()]


def gone(pid: int) -> bool:
    """True once pid has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in {"Z", "X"}


def outlives_a_killed_parent(start_child: str, within: float = 1.0) -> bool:
    """Run a Python parent that executes ``start_child`` (binding ``child``, an object with ``pid``), SIGKILL
    the parent, and tell whether the child is still alive ``within`` seconds later."""
    script = "import time\nimport llama_serve as ls\n" + textwrap.dedent(start_child) + \
        "\nprint(child.pid, flush=True)\ntime.sleep(600)\n"
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert not gone(child_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + within
    while not gone(child_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not gone(child_pid)


class ServerProcess:
    """``llama-serve ARGS --host 127.0.0.1 --port 0``; the bound address is read from the log."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, start_timeout: float = 120.0) -> None:
        cmd = [str(CONSOLE_SCRIPT), *args, "--host", "127.0.0.1", "--port", "0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=None if env is None else {**os.environ, **env})
        self.log: deque[str] = deque(maxlen=400)
        self._address = threading.Event()
        self.base_url = ""
        threading.Thread(target=self._read_log, daemon=True).start()
        self._wait_listening(start_timeout)

    def _read_log(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line.rstrip("\n"))
            match = LISTENING.search(line)
            if match and not self.base_url:
                self.base_url = match.group(1)
                self._address.set()

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._address.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("server did not start:\n" + "\n".join(self.log))

    def health(self) -> int:
        try:
            with urllib.request.urlopen(self.base_url + "/health", timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as e:
            return e.code

    def wait_healthy(self, timeout: float = 120.0) -> list[int]:
        """Poll /health until 200; returns every status seen (503 while loading)."""
        seen: list[int] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.health()
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == 200:
                return seen
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"server not healthy (statuses {seen}):\n" + "\n".join(self.log))

    def stop(self, grace: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
