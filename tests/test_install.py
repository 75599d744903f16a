"""The wheel is installed (not editable) and self-contained."""

from __future__ import annotations

import subprocess
import sys
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
