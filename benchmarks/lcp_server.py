"""Start llama-cpp-python's server (``python -m llama_cpp.server``) over our libllama.

Run with the peer venv's Python and ``LLAMA_CPP_LIB_PATH=<llama_serve>/lib``:

    LLAMA_CPP_LIB_PATH=… .bench/lcp/bin/python benchmarks/lcp_server.py <llama_serve>/bin --model m.gguf …

Our ggml loads its CPU backend at run time (one module per x86-64 level, in ``llama_serve/bin``), and
llama-cpp-python never asks ggml to load backends (its own build links the CPU backend in). So this loads the
best CPU module from that folder, as llama-server does at start-up, then hands over to llama_cpp.server with
the remaining arguments. Both servers then run the same native compute code.

With ``LCP_SERVER_PARENT=<pid>`` (set by bench_concurrency.py) it asks Linux to end it when that process dies.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import runpy
import sys


def die_with_parent() -> None:
    parent = os.environ.pop("LCP_SERVER_PARENT", None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig, sigterm = 1, 15
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, sigterm)
    if os.getppid() != int(parent):
        raise SystemExit("lcp_server: parent already gone")


def main() -> None:
    die_with_parent()
    backend_dir, server_args = sys.argv[1], sys.argv[2:]
    llama_cpp = importlib.import_module("llama_cpp")  # loads libllama and, beside it, libggml from LLAMA_CPP_LIB_PATH

    ggml = ctypes.CDLL(os.path.join(os.environ["LLAMA_CPP_LIB_PATH"], "libggml.so"))  # the copy already loaded
    ggml.ggml_backend_load_all_from_path(backend_dir.encode())
    if ggml.ggml_backend_reg_count() == 0:
        raise SystemExit(f"lcp_server: no ggml backend loaded from {backend_dir}")
    print(f"lcp_server: llama-cpp-python {llama_cpp.__version__}, backends from {backend_dir}", flush=True)
    sys.argv = ["llama_cpp.server", *server_args]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
