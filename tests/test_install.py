"""The wheel is installed (not editable) and self-contained."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import llama_serve
from serverproc import CONSOLE_SCRIPT


def test_imported_from_installed_wheel() -> None:
    package = Path(llama_serve.__file__).parent
    assert "site-packages" in package.parts, package
    assert (package / "bin" / "llama-server").is_file()
    assert (package / "py.typed").is_file()


@pytest.mark.parametrize("launcher", [[str(CONSOLE_SCRIPT)], [sys.executable, "-m", "llama_serve"]])
def test_version_reports_pinned_build_and_backends(launcher: list[str]) -> None:
    out = subprocess.run([*launcher, "--version"], capture_output=True, text=True, check=True).stdout
    assert f"llama-serve {llama_serve.__version__}" in out
    assert "llama.cpp b11312 (0c1e570" in out
    assert "build 11312, commit 0c1e570" in out  # upstream's own --version, from the binary itself
    backends = next(line for line in out.splitlines() if line.startswith("backends:"))
    assert "cpu" in backends and "rpc" in backends


def test_binaries_find_their_libraries_without_ld_library_path() -> None:
    package = Path(llama_serve.__file__).parent
    natives = list((package / "bin").iterdir()) + list((package / "lib").glob("*.so*"))
    assert len(natives) > 5
    assert not [p for p in natives if p.is_symlink()], "a wheel cannot carry symlinks: one file per library"
    for native in natives:
        if native.name.startswith("LICENSE"):
            continue
        ldd = subprocess.run(["ldd", str(native)], capture_output=True, text=True, env={}).stdout
        assert "not found" not in ldd, f"{native}:\n{ldd}"
        for line in ldd.splitlines():
            if "libllama" in line or "libggml" in line:
                resolved = Path(line.split("=>")[1].split("(")[0].strip()).resolve()
                assert resolved.parent == (package / "lib").resolve(), f"{native} resolves outside the package:\n{line}"


def test_demo_and_test_models_work_outside_a_clone(tmp_path: Path) -> None:
    """From an empty folder, with no llama.cpp tree: the shipped vocabulary builds the demo's model, the demo serves."""
    shipped = Path(llama_serve.__file__).parent / "vocab" / "ggml-vocab-llama-spm.gguf"
    assert shipped.is_file() and shipped.stat().st_size < 1_000_000  # the size budget: one vocabulary, < 1 MB
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CPP_SOURCE_DIR"}
    env["LLAMA_SERVE_MODEL_CACHE"] = str(tmp_path / "models")
    code = "from llama_serve import testmodels; print(testmodels.deterministic(), testmodels.tiny_random())"
    made = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert made.returncode == 0, made.stderr
    assert all(Path(p).is_file() for p in made.stdout.split())
    other = subprocess.run([sys.executable, "-c", "from llama_serve import testmodels; testmodels.tiny_random("
                            "vocab='ggml-vocab-qwen2.gguf')"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "ships only ggml-vocab-llama-spm.gguf; set LLAMA_CPP_SOURCE_DIR" in other.stderr

    demo = subprocess.Popen([sys.executable, "-m", "llama_serve.demo", "--port", "0"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                break
        else:
            raise AssertionError(f"the demo did not start (exit {demo.wait()})")
        url = match.group(1)
        for _ in range(200):
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.05)
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            assert resp.status == 200
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(30)


def test_licenses_ship_in_the_wheel() -> None:
    from importlib import metadata

    files = {Path(str(f)).name for f in metadata.files("llama-serve") or []}
    assert {"LICENSE", "THIRD_PARTY_NOTICES.md"} <= files
    assert (Path(llama_serve.__file__).parent / "lib" / "LICENSE.llama.cpp").is_file()
