"""A bundled executable run as a child of ours, with the lifetime rules that ``Server`` and ``RpcWorker`` share.

Race-free address (started on port 0, the bound address read from its log), captured logs that never
block the child, a start-up that fails with the exit code and last log lines, and no orphans: ``stop()``,
the context manager, a finalizer and, on Linux, the parent-death signal set by our launcher.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import subprocess
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

from ._launcher import DIE_WITH_PARENT

log = logging.getLogger("llama_serve.server")
LISTENING = re.compile(r"listening on (\S+)")


class ServerError(RuntimeError):
    """A bundled process failed; carries its exit code and last log lines."""

    def __init__(self, message: str, returncode: int | None = None, log_tail: Sequence[str] = ()) -> None:
        tail = "\n".join(log_tail)
        super().__init__(f"{message}" + (f" (exit code {returncode})" if returncode is not None else "") +
                         (f"\n--- last log lines ---\n{tail}" if tail else ""))
        self.returncode = returncode
        self.log_tail = list(log_tail)


class _LogReader:
    """Reads a child's output on its own thread (never holding the owner, so finalizers can run)."""

    def __init__(self, proc: subprocess.Popen[str], keep: int) -> None:
        self.lines: deque[str] = deque(maxlen=keep)
        self.listening = threading.Event()
        self.address = ""
        threading.Thread(target=self._read, args=(proc,), name=f"llama-serve-log-{proc.pid}", daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:  # read continuously: a chatty child never blocks on its pipe
            line = line.rstrip("\n")
            self.lines.append(line)
            log.debug("%s", line)
            if not self.listening.is_set():
                match = LISTENING.search(line)
                if match:
                    self.address = match.group(1)
                    self.listening.set()


class _Spawner:
    """Starts every child from one thread that lives as long as the process.

    Linux's parent-death signal fires when the *thread* that forked the child ends, not the process: a server
    started from a worker thread, a ``ThreadPoolExecutor`` or ``asyncio.to_thread`` would be killed as soon as
    that thread finished. Forking from one long-lived thread keeps the signal meaning "the process died".
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, job: Callable[[], Any]) -> Any:
        """``job()`` on the spawning thread; its result or its exception here."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="llama-serve-spawner", daemon=True)
                self._thread.start()
        if threading.current_thread() is self._thread:
            return job()
        future: Future[Any] = Future()
        self._jobs.put((future, job))
        return future.result()

    def _serve(self) -> None:
        while True:
            future, job = self._jobs.get()
            try:
                future.set_result(job())
            except BaseException as e:  # handed to the caller
                future.set_exception(e)


_spawner = _Spawner()


def _end(proc: subprocess.Popen[str], grace: float) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ManagedProcess:
    """Start ``_command(args)``; return once it says where it listens and ``_ready`` holds."""

    what = "process"  # named in errors

    def __init__(self, args: list[str], *, env: Mapping[str, str] | None, start_timeout: float, log_lines: int,
                 grace: float) -> None:
        self.args = args
        child_env = {**os.environ, **(env or {}), DIE_WITH_PARENT: str(os.getpid())}
        command = self._command(args)
        # No shell anywhere: an argv list; our launcher execs the bundled binary.
        self.proc: subprocess.Popen[str] = _spawner.run(lambda: subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            errors="replace", env=child_env))
        self._finalizer = weakref.finalize(self, _end, self.proc, grace)
        self._grace = grace
        self._log = _LogReader(self.proc, log_lines)
        try:
            deadline = time.monotonic() + start_timeout
            while not self._log.listening.wait(0.05):
                self._check_starting(deadline, "not listening")
            self._ready(deadline)
        except BaseException:
            self.stop()
            raise

    def _command(self, args: list[str]) -> list[str]:
        """argv of the child (a launcher that sets the parent-death signal, then execs the binary)."""
        raise NotImplementedError

    def _ready(self, deadline: float) -> None:
        """Wait, after the child listens, until it can serve (call ``_check_starting`` while waiting)."""

    def _check_starting(self, deadline: float, waiting_for: str) -> None:
        if self.proc.poll() is not None:
            time.sleep(0.2)  # let the log reader drain the last lines
            raise ServerError(f"{self.what} exited during start-up", self.proc.returncode, self.logs(40))
        if time.monotonic() > deadline:
            raise ServerError(f"{self.what} {waiting_for} before the start-up timeout", None, self.logs(40))

    @property
    def address(self) -> str:
        """Where the child listens, as it printed it (``http://host:port`` or ``host:port``)."""
        return self._log.address

    def logs(self, last: int | None = None) -> list[str]:
        """The child's captured output (the last ``last`` lines)."""
        lines = list(self._log.lines)
        return lines[-last:] if last else lines

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        """Terminate, wait ``grace`` seconds, then kill. Returns the exit code."""
        self._finalizer.detach()
        _end(self.proc, self._grace)
        return int(self.proc.returncode)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
