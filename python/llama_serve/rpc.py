"""llama.cpp's RPC backend: worker processes that lend their devices to a server over TCP.

``llama-serve-rpc`` (or ``python -m llama_serve.rpc``) runs the bundled ``ggml-rpc-server`` on a worker
machine; ``Server(model, rpc=[...], n_gpu_layers=99)`` splits the model's layers across the workers.
``RpcWorker`` spawns a local worker under the same lifetime rules as ``Server``.

The RPC protocol has no authentication: whoever reaches a worker's port can use its devices and
memory. Workers bind 127.0.0.1 unless told otherwise; see docs/rpc.md for private networks and SSH
tunnels.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import sys
from collections.abc import Mapping, Sequence

from ._launcher import BinaryNotFoundError, die_with_parent, exec_bin, find_bin
from ._process import ManagedProcess

WORKER = "ggml-rpc-server"
REACH_TIMEOUT = 5.0


class RpcArgumentError(ValueError):
    """An ``--rpc`` list that names no worker, or a worker that cannot be reached."""


class RpcWorker(ManagedProcess):
    """A local RPC worker (``ggml-rpc-server``); ready when this returns. ``endpoint`` is its ``host:port``.

    ``devices``: the ggml devices it lends (default: its accelerators, else the CPU); ``threads``: CPU
    threads; ``cache``: keep received tensors in a local file cache (faster reloads of large models).
    """

    what = "ggml-rpc-server"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, threads: int | None = None,
                 devices: Sequence[str] | None = None, cache: bool = False, extra_args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, start_timeout: float = 60.0, log_lines: int = 1000,
                 grace: float = 5.0) -> None:
        args = ["--host", host, "--port", str(port)]
        if threads is not None:
            args += ["--threads", str(threads)]
        if devices:
            args += ["--device", ",".join(devices)]
        if cache:
            args.append("--cache")
        super().__init__([*args, *extra_args], env=env, start_timeout=start_timeout, log_lines=log_lines,
                         grace=grace)

    def _command(self, args: list[str]) -> list[str]:
        return [sys.executable, "-m", "llama_serve.rpc", *args]

    @property
    def endpoint(self) -> str:
        """``host:port`` for ``Server(rpc=[...])`` / ``llama-serve --rpc``."""
        return self.address

    def __repr__(self) -> str:
        return f"<RpcWorker {self.endpoint or '(starting)'} pid {self.pid}>"


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RpcArgumentError(f"RPC worker {endpoint!r} is not host:port")
    return host, int(port)


def prepare_rpc_args(args: list[str]) -> list[str]:
    """Check that every ``--rpc`` worker answers (upstream aborts on one it cannot reach) and put
    ``--list-devices`` after ``--rpc`` so it lists the remote devices too."""
    index = args.index("--rpc")
    if index + 1 >= len(args):
        raise RpcArgumentError("--rpc needs a comma-separated list of host:port")
    for endpoint in filter(None, args[index + 1].split(",")):
        host, port = split_endpoint(endpoint)
        try:
            # The worker serves one client at a time: this connection is accepted and closed at once.
            socket.create_connection((host, port), timeout=REACH_TIMEOUT).close()
        except OSError as e:
            raise RpcArgumentError(
                f"RPC worker {endpoint} is not reachable ({e.strerror or e}); start one there with "
                f"`llama-serve-rpc --host <its address> --port {port}`") from e
    if "--list-devices" in args:
        args = [a for a in args if a != "--list-devices"] + ["--list-devices"]
    return args


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind_warning(args: Sequence[str]) -> str | None:
    """The warning for a worker bound beyond this machine (the protocol has no authentication)."""
    host = "127.0.0.1"
    for flag, value in itertools.pairwise(args):
        if flag in ("-H", "--host"):
            host = value
    if is_loopback(host):
        return None
    return (f"llama-serve-rpc: WARNING: binding {host} exposes this worker to every host that can reach it. "
            "The RPC protocol has no authentication or encryption: use it only on a private network, or keep "
            "the default 127.0.0.1 and reach it through an SSH tunnel (ssh -N -L 50052:127.0.0.1:50052 worker).")


def main(argv: list[str] | None = None) -> int:
    """``llama-serve-rpc``: become the bundled RPC worker (flags: --host, --port, --threads, --device, --cache)."""
    args = sys.argv[1:] if argv is None else argv
    die_with_parent()
    warning = bind_warning(args)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    try:
        return exec_bin([str(find_bin(WORKER)), *args])
    except BinaryNotFoundError as e:
        print(f"llama-serve-rpc: {e}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    raise SystemExit(main())
