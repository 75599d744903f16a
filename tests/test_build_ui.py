"""scripts/build_ui.py: cache, prebuilt assets, and the placeholder page when npm is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from scriptmod import load_script

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_UI_SCRIPT = ROOT / "vendor" / "llama.cpp" / "scripts" / "ui-assets.cmake"


build_ui = load_script("build_ui")


def fake_tree(tmp_path: Path) -> Path:
    ui = tmp_path / "tree" / "tools" / "ui"
    ui.mkdir(parents=True)
    (ui / "package.json").write_text("{}")
    return tmp_path / "tree"


def test_without_npm_a_placeholder_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no npm anywhere
    tree = fake_tree(tmp_path)
    status = build_ui.ensure_ui(tree, tmp_path / "work", tmp_path / "cache")
    dist = tree / "tools" / "ui" / "dist"
    assert status.startswith("WARNING") and "NOT built" in status
    assert "No web UI in this build" in (dist / "index.html").read_text()
    assert not build_ui.is_built(dist)  # the next build with npm will try again
    assert not (tmp_path / "cache").exists()


def test_placeholder_passes_upstreams_asset_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cmake = shutil.which("cmake")
    if cmake is None or not UPSTREAM_UI_SCRIPT.is_file():
        pytest.skip("needs cmake and a provisioned vendor/llama.cpp")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    tree = fake_tree(tmp_path)
    build_ui.ensure_ui(tree, tmp_path / "work", tmp_path / "cache")
    out = tmp_path / "ui-build"
    defines = {"UI_SOURCE_DIR": tree / "tools" / "ui", "UI_BINARY_DIR": out, "LLAMA_SOURCE_DIR": ROOT / "vendor" /
               "llama.cpp", "BUILD_UI": "OFF", "HF_ENABLED": "OFF", "LLAMA_UI_GZIP": "OFF", "LLAMA_BUILD_NUMBER": 11312}
    result = subprocess.run([cmake, *(f"-D{k}={v}" for k, v in defines.items()), "-P", str(UPSTREAM_UI_SCRIPT)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "embedded" in result.stdout + result.stderr
    assert (out / "ui.cpp").stat().st_size > 1000


def test_cache_and_prebuilt_assets_are_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    cached = tmp_path / "cache" / build_ui.COMMIT[:12] / "dist"
    cached.mkdir(parents=True)
    (cached / "index.html").write_text("<html>the real UI</html>")
    tree = fake_tree(tmp_path)
    assert "built assets" in build_ui.ensure_ui(tree, tmp_path / "work", tmp_path / "cache")
    dist = tree / "tools" / "ui" / "dist"
    assert (dist / "index.html").read_text() == "<html>the real UI</html>"
    assert "prebuilt" in build_ui.ensure_ui(tree, tmp_path / "work", tmp_path / "cache")
