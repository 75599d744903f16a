"""Make sure the pinned llama.cpp tree has its web UI built (``tools/ui/dist``), offline of any Hub.

Upstream's build embeds ``tools/ui/dist`` when it exists (before trying npm or a download). This script
fills it, in order: already there (e.g. carried by our sdist) → our cache for this commit
(``~/.cache/llama-serve/ui/<commit>``, shared by every clone on the machine) → ``npm ci && npm run build`` in a
scratch copy of ``tools/ui`` (node_modules never enters the source tree or the sdist) → a placeholder page that
says why there is no UI, so ``/`` is never a broken page. Exit code 0 in every case; the last line says which.

    python scripts/build_ui.py --tree vendor/llama.cpp --work build/ui-npm
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provision_llama_cpp import COMMIT

PLACEHOLDER_MARK = ".llama-serve-placeholder"
# The files upstream's scripts/ui-assets.cmake requires of a dist folder.
PLACEHOLDER_FILES = {
    "manifest.webmanifest": '{"name": "llama-serve", "start_url": "/"}\n',
    "sw.js": "// no service worker: the web UI was not built\n",
    "build.json": '{"placeholder": true}\n',
    "version.json": '{"version": "none"}\n',
    "_app/immutable/bundle.placeholder.js": "// the web UI was not built\n",
    "_app/immutable/bundle.placeholder.css": "body { font-family: sans-serif; margin: 3em; }\n",
    "workbox-placeholder.js": "// no workbox: the web UI was not built\n",
}
PLACEHOLDER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>llama-serve: no web UI in this build</title></head>
<body style="font-family: sans-serif; margin: 3em; max-width: 40em">
<h1>No web UI in this build</h1>
<p>This llama-serve was built without llama.cpp's web UI, because <code>npm</code> was not available when it was
compiled. The server and its API work: <code>/v1/chat/completions</code>, <code>/health</code>, ...</p>
<p>To get the UI, install Node.js 20+ with npm and rebuild (<code>pip install .</code>),
or install a released wheel.</p>
</body></html>
"""


def is_built(dist: Path) -> bool:
    return (dist / "index.html").is_file() and not (dist / PLACEHOLDER_MARK).exists()


def npm_build(ui_source: Path, work: Path) -> Path | None:
    """npm ci + npm run build in a scratch copy; the dist folder, or None (with the reason printed)."""
    npm = shutil.which("npm")
    if npm is None:
        print("build_ui: npm not found", file=sys.stderr)
        return None
    if work.exists():
        for entry in work.iterdir():  # keep node_modules between attempts, refresh the sources
            if entry.name != "node_modules":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    shutil.copytree(ui_source, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns("node_modules", "dist"))
    out = work / "dist"
    env = {**os.environ, "LLAMA_UI_OUT_DIR": str(out)}
    for step in (["ci", "--no-audit", "--no-fund", "--loglevel=error"], ["run", "build"]):
        result = subprocess.run([npm, *step], cwd=work, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            print(f"build_ui: npm {step[0]} failed:\n{tail}", file=sys.stderr)
            return None
    return out if (out / "index.html").is_file() else None


def write_placeholder(dist: Path) -> None:
    shutil.rmtree(dist, ignore_errors=True)
    for name, text in {"index.html": PLACEHOLDER_PAGE, **PLACEHOLDER_FILES, PLACEHOLDER_MARK: "1\n"}.items():
        (dist / name).parent.mkdir(parents=True, exist_ok=True)
        (dist / name).write_text(text)


def install(source: Path, dist: Path) -> None:
    """Copy a built dist folder into place atomically."""
    staging = Path(tempfile.mkdtemp(prefix=".dist-", dir=dist.parent))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        shutil.rmtree(dist, ignore_errors=True)
        staging.rename(dist)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_ui(tree: Path, work: Path, cache_root: Path) -> str:
    dist = tree / "tools" / "ui" / "dist"
    if is_built(dist):
        return f"web UI: prebuilt assets in {dist}"
    cached = cache_root / COMMIT[:12] / "dist"
    if not is_built(cached):
        built = npm_build(tree / "tools" / "ui", work)
        if built is None:
            write_placeholder(dist)
            return ("WARNING: web UI NOT built (see above); the server will show a page saying so at '/'. "
                    "Install Node.js with npm and rebuild to embed the UI.")
        cached.parent.mkdir(parents=True, exist_ok=True)
        install(built, cached)
    install(cached, dist)
    return f"web UI: built assets from {cached}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("LLAMA_SERVE_UI_CACHE", Path.home() / ".cache/llama-serve/ui")))
    args = parser.parse_args(argv)
    print(ensure_ui(args.tree.resolve(), args.work.resolve(), args.cache))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
