"""``llama-serve`` is the server: flags, env, signals and exit codes belong to llama-server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from llama_serve import BinaryNotFoundError, find_server_bin
from llama_serve._launcher import find_bin
from serverproc import CONSOLE_SCRIPT, ServerProcess


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_console_script_execs_the_server(deterministic_model: Path) -> None:
    with ServerProcess("-m", str(deterministic_model), "-c", "256") as srv:
        srv.wait_healthy()
        # Same PID, and that process is the bundled binary: no Python wrapper in between.
        assert Path(f"/proc/{srv.proc.pid}/exe").resolve() == find_server_bin().resolve()
        os.kill(srv.proc.pid, signal.SIGTERM)
        assert srv.proc.wait(30) == 0
        assert any("cleaning up" in line or "exiting" in line for line in srv.log), "\n".join(srv.log)


def test_missing_model_exits_nonzero_and_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model.gguf"
    result = run_cli("-m", str(missing), "--port", "0")
    assert result.returncode != 0
    assert str(missing) in result.stdout + result.stderr


def test_unknown_flag_gets_upstream_error() -> None:
    result = run_cli("--no-such-flag-anywhere")
    assert result.returncode != 0
    assert "--no-such-flag-anywhere" in result.stderr + result.stdout
    assert "invalid argument" in result.stderr + result.stdout


def test_upstream_help_passes_through() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "--n-gpu-layers" in result.stdout and "--parallel" in result.stdout


def test_llama_arg_env_vars_reach_the_server(deterministic_model: Path) -> None:
    with ServerProcess(env={"LLAMA_ARG_MODEL": str(deterministic_model), "LLAMA_ARG_ALIAS": "from-env"}) as srv:
        srv.wait_healthy()
        with urllib.request.urlopen(srv.base_url + "/v1/models", timeout=10) as resp:
            models = json.load(resp)
        assert [m["id"] for m in models["data"]] == ["from-env"]


def test_finder_names_every_place_it_looked() -> None:
    with pytest.raises(BinaryNotFoundError) as info:
        find_bin("llama-no-such-tool")
    message = str(info.value)
    assert message.count("llama-no-such-tool") >= 2
    assert str(find_server_bin().parent / "llama-no-such-tool") in message


def test_a_gpu_backend_that_does_not_load_is_named_with_its_missing_library(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """ggml skips such a module silently; backend_load_errors() and --list-devices say what is missing."""
    import shutil

    from llama_serve import backends

    if shutil.which("cc") is None:
        pytest.skip("no C compiler to make a module with a missing dependency")
    (tmp_path / "dep.c").write_text("int cuda_like_dependency(void) { return 1; }\n")
    (tmp_path / "mod.c").write_text("int cuda_like_dependency(void);\nint f(void) { return cuda_like_dependency(); }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", tmp_path / "libcuda.so",
                    tmp_path / "dep.c"], check=True)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", tmp_path / "libggml-cuda.so", tmp_path / "mod.c",
                    f"-L{tmp_path}", "-lcuda"], check=True)
    (tmp_path / "libcuda.so").unlink()  # as on a machine without the driver
    (tmp_path / "libggml-cpu-zen9.so").write_text("never probed: a CPU variant may not run here")
    monkeypatch.setattr(backends, "bin_dir", lambda: tmp_path)
    errors = backends.backend_load_errors()
    assert list(errors) == ["libggml-cuda.so"]
    assert "libcuda.so.1" in errors["libggml-cuda.so"] and "NVIDIA driver" in errors["libggml-cuda.so"]
    assert backends.describe_load_errors() == [
        f"llama-serve: the backend libggml-cuda.so is installed but does not load: {errors['libggml-cuda.so']}"]


def test_windows_finds_the_nvidia_runtime_wheels_dlls_through_path(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """No rpath on Windows: the CUDA add-on's DLL finds cudart/cuBLAS via PATH, set by the launcher and _native
    (the layouts are those of NVIDIA's win_amd64 wheels, CUDA 12 and 13)."""
    from llama_serve import _launcher

    site = tmp_path / "site-packages"
    for dll in ("nvidia/cuda_runtime/bin/cudart64_12.dll", "nvidia/cublas/bin/cublas64_12.dll",
                "nvidia/cu13/bin/x86_64/cudart64_13.dll", "nvidia/cu13/lib/libcudart.so.13"):
        (site / dll).parent.mkdir(parents=True, exist_ok=True)
        (site / dll).write_bytes(b"")
    (site / "llama_serve" / "bin").mkdir(parents=True)
    expected = [site / "nvidia/cu13/bin/x86_64", site / "nvidia/cublas/bin", site / "nvidia/cuda_runtime/bin"]
    assert _launcher.nvidia_dll_dirs(site) == expected
    monkeypatch.setattr(_launcher, "bin_dir", lambda: site / "llama_serve" / "bin")
    env = _launcher.with_nvidia_dll_path({"PATH": "C:\\Windows", "OTHER": "1"})
    assert env["PATH"] == os.pathsep.join([*map(str, expected), "C:\\Windows"]) and env["OTHER"] == "1"
    assert _launcher.nvidia_dll_dirs(tmp_path) == []
