"""Provisioning the pinned llama.cpp tree: hash check, extraction, and CMake's messages."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from scriptmod import load_script

ROOT = Path(__file__).resolve().parent.parent
SDIST_TOP = "llama_cpp_python-0.3.36"


provision = load_script("provision_llama_cpp")


def make_sdist(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


FAKE_TREE = {
    f"{SDIST_TOP}/pyproject.toml": b"[project]\n",
    f"{SDIST_TOP}/vendor/llama.cpp/.git": b"gitdir: ../../.git/modules/vendor/llama.cpp\n",
    f"{SDIST_TOP}/vendor/llama.cpp/CMakeLists.txt": b"project(fake)\n",
    f"{SDIST_TOP}/vendor/llama.cpp/src/llama.cpp": b"// fake\n",
}


def test_wrong_hash_stops_with_a_message_that_says_what_to_do(tmp_path: Path) -> None:
    archive = make_sdist(tmp_path / f"{SDIST_TOP}.tar.gz", FAKE_TREE)
    dest = tmp_path / "vendor" / "llama.cpp"
    with pytest.raises(provision.ProvisionError) as info:
        provision.provision(dest, archive)
    message = str(info.value)
    assert "sha256 mismatch" in message and provision.SDIST_SHA256 in message
    assert "LLAMA_CPP_SOURCE_DIR" in message
    assert not dest.exists()


def test_command_line_exits_1_on_a_corrupted_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "truncated.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    assert provision.main(["--dest", str(tmp_path / "tree"), "--archive", str(archive)]) == 1
    assert "sha256 mismatch" in capsys.readouterr().err


def test_missing_archive_is_named(tmp_path: Path) -> None:
    with pytest.raises(provision.ProvisionError, match="does not exist"):
        provision.provision(tmp_path / "tree", tmp_path / "absent.tar.gz")


def test_extraction_takes_only_the_llama_cpp_folder(tmp_path: Path) -> None:
    archive = make_sdist(tmp_path / "sdist.tar.gz", FAKE_TREE)
    dest = tmp_path / "vendor" / "llama.cpp"
    provision.extract_tree(archive, dest, patches=[])
    assert (dest / "CMakeLists.txt").read_bytes() == b"project(fake)\n"
    assert (dest / "src" / "llama.cpp").is_file()
    assert not (dest / ".git").exists() and not (dest / "pyproject.toml").exists()
    assert f"commit={provision.COMMIT}" in (dest / provision.STAMP).read_text()
    assert [p.name for p in dest.parent.iterdir()] == ["llama.cpp"]  # no staging folder left behind


def test_patches_are_applied_and_recorded_so_a_changed_patch_reprovisions(tmp_path: Path) -> None:
    archive = make_sdist(tmp_path / "sdist.tar.gz", FAKE_TREE)
    patch = tmp_path / "0001-fix.patch"
    patch.write_text("--- a/src/llama.cpp\n+++ b/src/llama.cpp\n@@ -1 +1 @@\n-// fake\n+// fixed\n")
    dest = tmp_path / "tree"
    provision.extract_tree(archive, dest, patches=[patch])
    assert (dest / "src" / "llama.cpp").read_text() == "// fixed\n"
    assert f"patch=0001-fix.patch {provision.sha256_of(patch)}" in (dest / provision.STAMP).read_text()
    assert (dest / provision.STAMP).read_text() == provision.stamp_text([patch])
    assert (dest / provision.STAMP).read_text() != provision.stamp_text([])  # the patch set changed: stale


def test_a_patch_that_does_not_apply_stops_provisioning(tmp_path: Path) -> None:
    archive = make_sdist(tmp_path / "sdist.tar.gz", FAKE_TREE)
    patch = tmp_path / "0001-stale.patch"
    patch.write_text("--- a/src/llama.cpp\n+++ b/src/llama.cpp\n@@ -1 +1 @@\n-// other\n+// fixed\n")
    with pytest.raises(provision.ProvisionError, match=r"0001-stale\.patch does not apply"):
        provision.extract_tree(archive, tmp_path / "tree", patches=[patch])
    assert not (tmp_path / "tree").exists()


def test_if_stale_leaves_a_current_tree_and_a_foreign_tree_alone(tmp_path: Path) -> None:
    current, foreign = tmp_path / "current", tmp_path / "foreign"
    for tree in (current, foreign):
        tree.mkdir()
        (tree / "CMakeLists.txt").write_text("project(x)\n")
    (current / provision.STAMP).write_text(provision.stamp_text())
    for tree in (current, foreign):  # no network, no archive: returning 0 means nothing was fetched
        assert provision.main(["--dest", str(tree), "--if-stale"]) == 0
        assert (tree / "CMakeLists.txt").read_text() == "project(x)\n"
    assert provision.is_stale(current) is False and provision.is_stale(foreign) is False
    (current / provision.STAMP).write_text(provision.stamp_text([]) + "patch=old 00\n")
    assert provision.is_stale(current)


def test_the_provisioned_tree_carries_our_patches() -> None:
    tree = ROOT / "vendor" / "llama.cpp"
    if not (tree / provision.STAMP).is_file():
        pytest.skip("vendor/llama.cpp was not provisioned by us (LLAMA_CPP_SOURCE_DIR build)")
    assert not provision.is_stale(tree), "vendor/llama.cpp predates patches/: reconfigure to re-provision it"


def test_extraction_refuses_paths_outside_the_tree(tmp_path: Path) -> None:
    archive = make_sdist(tmp_path / "evil.tar.gz", {
        **FAKE_TREE, f"{SDIST_TOP}/vendor/llama.cpp/../../../../escaped": b"x"})
    with pytest.raises(provision.ProvisionError, match="could not extract"):
        provision.extract_tree(archive, tmp_path / "tree")
    assert not (tmp_path / "escaped").exists()


def cmake_configure(tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    """Configure a copy of our CMake project (without any llama.cpp tree) in tmp_path."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not on PATH")
    project = tmp_path / "project"
    project.mkdir()
    for part in ["CMakeLists.txt", "cmake", "scripts", "patches"]:
        source = ROOT / part
        copy = shutil.copytree if source.is_dir() else shutil.copy
        copy(source, project / part)
    full_env = {k: v for k, v in os.environ.items() if k != "LLAMA_CPP_SOURCE_DIR"}
    result = subprocess.run([cmake, "-S", str(project), "-B", str(tmp_path / "build")], capture_output=True,
                            text=True, env={**full_env, **env}, timeout=300)
    return result.returncode, " ".join((result.stdout + result.stderr).split())  # CMake wraps lines


def test_build_stops_clearly_when_the_source_cannot_be_fetched(tmp_path: Path) -> None:
    returncode, output = cmake_configure(tmp_path, {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "",
                                                    "XDG_CACHE_HOME": str(tmp_path / "empty-cache")})
    assert returncode != 0
    assert "could not fetch llama-cpp-python==0.3.36" in output
    assert "LLAMA_CPP_SOURCE_DIR" in output
    assert not (tmp_path / "project" / "vendor" / "llama.cpp").exists()


def test_build_rejects_a_source_dir_that_is_not_llama_cpp(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    returncode, output = cmake_configure(tmp_path, {"LLAMA_CPP_SOURCE_DIR": str(tmp_path / "empty")})
    assert returncode != 0
    assert "is not a llama.cpp source tree" in output
