"""Provision the pinned llama.cpp source tree into ``vendor/llama.cpp``.

The tree is the ``vendor/llama.cpp`` folder of a pinned source distribution on
the package index, fetched by package name with pip and verified by sha256.
Our own patches (``patches/*.patch``) are applied on top, and a stamp in the tree records the
archive and every patch: CMakeLists.txt runs this with ``--if-stale`` at each configure, so a tree
provisioned before a patch was added or changed is provisioned again (from the verified archive kept
in the user cache, so without the network). A tree with no stamp is someone's own and is left alone.
Runnable by hand:

    python scripts/provision_llama_cpp.py [--dest vendor/llama.cpp] [--archive FILE] [--if-stale]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
BUILD_NUMBER = 11312
SDIST_NAME = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
TREE_IN_SDIST = "vendor/llama.cpp"
STAMP = ".llama-serve-provenance"

ROOT = Path(__file__).resolve().parent.parent
HELP = (
    "To build offline, set LLAMA_CPP_SOURCE_DIR to a llama.cpp checkout of commit "
    f"{COMMIT} (b{BUILD_NUMBER}), or place that tree at vendor/llama.cpp."
)


class ProvisionError(RuntimeError):
    """Provisioning failed; the message says what to do."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def archive_cache() -> Path:
    """Where the verified archive is kept, so re-provisioning needs no network."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "llama-serve" / "sdist"


def our_patches() -> list[Path]:
    return sorted((ROOT / "patches").glob("*.patch"))


def stamp_text(patches: Sequence[Path] | None = None) -> str:
    """What a current tree's stamp says: the pinned archive and each of our patches, by hash."""
    lines = [f"commit={COMMIT}", f"build={BUILD_NUMBER}", f"sha256={SDIST_SHA256}"]
    lines += [f"patch={p.name} {sha256_of(p)}" for p in (our_patches() if patches is None else patches)]
    return "\n".join(lines) + "\n"


def is_stale(tree: Path) -> bool:
    """A tree we provisioned whose archive or patches no longer match; False for a tree of someone else's."""
    stamp = tree / STAMP
    return stamp.is_file() and stamp.read_text() != stamp_text()


def download_sdist(into: Path) -> Path:
    """Fetch the pinned sdist by package name with pip (its configured index)."""
    spec = f"{SDIST_NAME}=={SDIST_VERSION}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "-d", str(into), spec]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-8:])
        raise ProvisionError(f"could not fetch {spec} with pip:\n{tail}\n{HELP}")
    found = sorted(into.glob("*.tar.gz"))
    if not found:
        raise ProvisionError(f"pip fetched no source archive of {spec} into {into}.\n{HELP}")
    return found[0]


def verify(archive: Path) -> None:
    if not archive.is_file():
        raise ProvisionError(f"source archive {archive} does not exist.\n{HELP}")
    actual = sha256_of(archive)
    if actual != SDIST_SHA256:
        raise ProvisionError(
            f"sha256 mismatch for {archive}:\n  expected {SDIST_SHA256}\n  actual   {actual}\n"
            f"The archive is not the pinned {SDIST_NAME}=={SDIST_VERSION}; delete it and retry. {HELP}"
        )


def tree_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The sdist's llama.cpp folder, renamed relative to that folder."""
    members = []
    for member in tar.getmembers():
        _, _, inside_sdist = member.name.partition("/")
        if not inside_sdist.startswith(TREE_IN_SDIST + "/"):
            continue
        member.name = inside_sdist[len(TREE_IN_SDIST) + 1 :]
        if member.name != ".git":  # a submodule pointer back into the sdist's own repository
            members.append(member)
    return members


def extract_tree(archive: Path, dest: Path, patches: Sequence[Path] | None = None) -> None:
    """Extract the sdist's llama.cpp folder into dest, atomically (staged next to it), with ``patches``
    (default: ours) applied."""
    patches = our_patches() if patches is None else patches
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".provision-", dir=dest.parent))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = tree_members(tar)
                if not members:
                    raise ProvisionError(f"{archive} holds no {TREE_IN_SDIST}/ folder.\n{HELP}")
                tar.extractall(staging, members=members, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ProvisionError(f"could not extract {archive}: {e}\n{HELP}") from e
        if not (staging / "CMakeLists.txt").is_file():
            raise ProvisionError(f"{archive}: the extracted tree has no CMakeLists.txt.\n{HELP}")
        apply_patches(staging, patches)
        (staging / STAMP).write_text(stamp_text(patches))
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def apply_patches(tree: Path, patches: Sequence[Path]) -> None:
    for patch in patches:
        result = subprocess.run(["patch", "-p1", "--forward", "--batch", "-i", str(patch)],
                                cwd=tree, capture_output=True, text=True)
        if result.returncode != 0:
            raise ProvisionError(f"patch {patch.name} does not apply:\n{result.stdout}{result.stderr}")


def provision(dest: Path, archive: Path | None = None) -> Path:
    if archive is not None:
        verify(archive)
        extract_tree(archive, dest)
        return dest
    cached = archive_cache() / f"{SDIST_NAME.replace('-', '_')}-{SDIST_VERSION}.tar.gz"
    if cached.is_file() and sha256_of(cached) == SDIST_SHA256:
        extract_tree(cached, dest)
        return dest
    with tempfile.TemporaryDirectory(prefix="llama-serve-sdist-") as tmp:
        fetched = download_sdist(Path(tmp))
        verify(fetched)
        extract_tree(fetched, dest)
        with contextlib.suppress(OSError):  # keeping a copy is an optimisation only
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fetched, cached)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=ROOT / "vendor" / "llama.cpp")
    parser.add_argument("--archive", type=Path, help="use this sdist instead of fetching it")
    parser.add_argument("--if-stale", action="store_true",
                        help="only when the tree is missing, or ours and out of date with the archive or patches")
    args = parser.parse_args(argv)
    dest = args.dest.resolve()
    if args.if_stale and (dest / "CMakeLists.txt").is_file() and not is_stale(dest):
        return 0
    try:
        tree = provision(dest, args.archive)
    except ProvisionError as e:
        print(f"llama-serve: provisioning llama.cpp failed: {e}", file=sys.stderr)
        return 1
    print(f"llama-serve: provisioned llama.cpp {COMMIT[:7]} (b{BUILD_NUMBER}) into {tree}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
