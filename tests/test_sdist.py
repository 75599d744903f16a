"""Our sdist carries the pinned llama.cpp tree (minus docs, examples, large data) and needs no network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (ROOT / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file():
        pytest.skip("no provisioned vendor/llama.cpp in this checkout")
    out = tmp_path_factory.mktemp("sdist")
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    (archive,) = out.glob("llama_serve-*.tar.gz")
    return archive


def test_sdist_carries_the_tree_without_docs_or_models(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    top = names[0].split("/")[0]
    tree = f"{top}/vendor/llama.cpp"
    for needed in ["CMakeLists.txt", "ggml/src/ggml.c", "src/llama.cpp", "tools/server/server.cpp",
                   "tools/ui/package.json", "LICENSE", "convert_hf_to_gguf.py"]:
        assert f"{tree}/{needed}" in names, needed
    shipped_vocab = f"{tree}/models/ggml-vocab-llama-spm.gguf"  # installed into the wheel (llama_serve/vocab)
    assert shipped_vocab in names
    for left_out in ["docs/", "examples/", "models/", "media/"]:
        assert not any(n.startswith(f"{tree}/{left_out}") and n != shipped_vocab
                       and n != f"{tree}/models" for n in names), left_out
    assert f"{top}/LICENSE" in names and f"{top}/THIRD_PARTY_NOTICES.md" in names
    assert not any(n.startswith((f"{top}/build/", f"{top}/dist/", f"{top}/.venv")) for n in names)
    assert not any("node_modules" in n for n in names)
    if (ROOT / "vendor" / "llama.cpp" / "tools" / "ui" / "dist" / "index.html").is_file():
        assert f"{tree}/tools/ui/dist/index.html" in names  # building from the sdist needs no npm
    assert f"{top}/scripts/provision_llama_cpp.py" in names


def test_sdist_configures_offline_from_its_own_tree(sdist: Path, tmp_path: Path) -> None:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not on PATH")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    (source,) = tmp_path.iterdir()
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CPP_SOURCE_DIR"}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS="")  # any attempt to fetch would fail
    pybind11 = pytest.importorskip("pybind11")
    result = subprocess.run([cmake, "-S", str(source), "-B", str(tmp_path / "build"), "-DLLAMA_SERVE_PROFILE=dev",
                             f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}"],
                            capture_output=True, text=True, env=env, timeout=600)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, output[-3000:]
    assert f"llama.cpp source {source}/vendor/llama.cpp" in output
    assert "provisioning" not in output
