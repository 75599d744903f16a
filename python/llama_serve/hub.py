"""Model references, resolved to local files; one resolver for Python and the command line.

- a local path;
- ``hf:<author>/<repo>/<revision>/<file>`` — one file at a revision;
- ``<author>/<repo>[:<quant>]`` (upstream's ``-hf``), with an optional ``--hf-file`` — the GGUF matching the quant
  (``Q4_K_M`` when none is given and several exist), plus the repository's ``mmproj`` file when there is one.

Downloads go through ``huggingface_hub`` into its standard cache (progress bar, resume, ``HF_TOKEN``,
``HF_HUB_OFFLINE``, ``HF_ENDPOINT``); every shard of a split GGUF is fetched.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

CACHE_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")
DEFAULT_QUANTS = ("Q4_K_M", "Q4_0", "Q8_0")  # preference when the reference names no quant (upstream: Q4_K_M)
HF_PREFIX = "hf:"
T = TypeVar("T")


class ModelReferenceError(ValueError):
    """A model reference that cannot be resolved; the message says why and what to do."""


@dataclass(frozen=True)
class ModelFiles:
    model: Path
    mmproj: Path | None = None


def resolve(reference: str | os.PathLike[str], *, token: str | None = None) -> ModelFiles:
    """Local files for ``reference`` (a path or ``hf:author/repo/revision/file``)."""
    text = os.fspath(reference)
    if not text.startswith(HF_PREFIX):
        return ModelFiles(Path(text))
    parts = text[len(HF_PREFIX) :].split("/", 3)
    if len(parts) != 4 or not all(parts):
        raise ModelReferenceError(f"{text!r}: expected hf:<author>/<repo>/<revision>/<file>")
    author, repo, revision, filename = parts
    return ModelFiles(download(f"{author}/{repo}", filename, revision=revision, token=token))


def resolve_repo(spec: str, *, hf_file: str | None = None, revision: str = "main",
                 token: str | None = None) -> ModelFiles:
    """Upstream's ``-hf author/repo[:quant]`` (and ``--hf-file``): pick, download and return the GGUF(s)."""
    repo, _, quant = spec.partition(":")
    if repo.count("/") != 1:
        raise ModelReferenceError(f"{spec!r}: expected <author>/<repo>[:<quant>]")
    files = [f for f in _hub_call(repo, "list files", lambda hub: hub.list_repo_files(repo, revision=revision,
                                                                                        token=token))
             if f.endswith(".gguf")]
    projectors = sorted(f for f in files if "mmproj" in Path(f).name.lower())
    if hf_file is None:
        hf_file = pick_quant(repo, [f for f in files if f not in projectors], quant)
    model = download(repo, hf_file, revision=revision, token=token)
    mmproj = download(repo, projectors[0], revision=revision, token=token) if projectors else None
    return ModelFiles(model, mmproj)


def pick_quant(repo: str, files: list[str], quant: str) -> str:
    """The one model (a shard set counts once) whose name carries ``quant``."""
    models = sorted({SHARD.sub("-00001-of-\\2.gguf", f) for f in files})
    if not models:
        raise ModelReferenceError(f"{repo} has no GGUF files")
    wanted = [quant] if quant else list(DEFAULT_QUANTS)
    for q in wanted:
        matches = [f for f in models if re.search(rf"(^|[-_.]){re.escape(q)}([-_.]|$)", Path(f).stem, re.I)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ModelReferenceError(f"{repo}:{q} is ambiguous: {', '.join(matches)}; choose one with --hf-file")
    if not quant and len(models) == 1:
        return models[0]
    raise ModelReferenceError(f"{repo} has no GGUF for quant {quant or '/'.join(DEFAULT_QUANTS)}; "
                              f"available: {', '.join(models)}")


def download(repo: str, filename: str, *, revision: str = "main", token: str | None = None) -> Path:
    """Fetch ``filename`` (every shard, if it is part of a split GGUF) into the Hub cache; path of the first."""
    shard = SHARD.search(filename)
    names = [filename]
    if shard:
        count = int(shard.group(2))
        names = [SHARD.sub(f"-{i:05d}-of-{count:05d}.gguf", filename) for i in range(1, count + 1)]
    paths = [_fetch(repo, name, revision, token) for name in names]
    return paths[0]


def _fetch(repo: str, name: str, revision: str, token: str | None) -> Path:
    return Path(_hub_call(repo, f"download {name}",
                          lambda hub: hub.hf_hub_download(repo, name, revision=revision, token=token)))


def _hub_call(repo: str, what: str, call: Callable[[Any], T]) -> T:
    """Run a huggingface_hub call, turning its errors into one clear ModelReferenceError."""
    import huggingface_hub
    from huggingface_hub import constants, errors

    try:
        return call(huggingface_hub)
    except errors.GatedRepoError as e:
        raise ModelReferenceError(f"{repo} is gated: accept its terms on the Hub and set HF_TOKEN ({what})") from e
    except errors.RepositoryNotFoundError as e:
        raise ModelReferenceError(f"{repo}: repository not found, or private without a token ({what})") from e
    except errors.RevisionNotFoundError as e:
        raise ModelReferenceError(f"{repo}: revision not found ({what})") from e
    except errors.LocalEntryNotFoundError as e:  # before its base class, EntryNotFoundError
        raise ModelReferenceError(f"{repo}: offline (HF_HUB_OFFLINE) and not in the cache ({what})") from e
    except errors.EntryNotFoundError as e:
        raise ModelReferenceError(f"{repo}: file not found ({what})") from e
    except (errors.HfHubHTTPError, OSError) as e:
        if e.errno in CACHE_WRITE_ERRORS and not isinstance(e, errors.HfHubHTTPError):  # the local cache, not the Hub
            raise ModelReferenceError(f"{repo}: {what} failed: cannot write to the Hugging Face cache "
                                      f"{constants.HF_HUB_CACHE} ({e.strerror}); free space there or set HF_HUB_CACHE "
                                      "to a writable directory with room for the model") from e
        raise ModelReferenceError(f"{repo}: {what} failed: {e}") from e


MODEL_FLAGS = {"-m", "--model"}
REPO_FLAGS = {"-hf", "-hfr", "--hf-repo"}
FILE_FLAGS = {"-hff", "--hf-file"}
TOKEN_FLAGS = {"-hft", "--hf-token"}


def resolve_cli_args(args: list[str], env: MutableMapping[str, str]) -> list[str]:
    """Server argv with every model reference replaced by local files (``-m PATH [--mmproj PATH]``).

    Handles ``-m hf:…``, ``-hf repo[:quant]`` with ``-hff``, and their ``LLAMA_ARG_*`` variables, so the
    server never downloads by itself. ``env`` is updated in place (resolved variables are removed).
    """
    out: list[str] = []
    repo = env.pop("LLAMA_ARG_HF_REPO", None)
    hf_file = env.pop("LLAMA_ARG_HF_FILE", None)
    token = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in TOKEN_FLAGS), None) or env.get("HF_TOKEN")
    model_env = env.get("LLAMA_ARG_MODEL", "")
    if model_env.startswith(HF_PREFIX):
        env["LLAMA_ARG_MODEL"] = str(resolve(model_env, token=token).model)
    i = 0
    while i < len(args):
        flag = args[i]
        name, eq, inline = flag.partition("=")
        value = inline if eq else (args[i + 1] if i + 1 < len(args) else None)
        step = 1 if eq else 2
        if name in REPO_FLAGS and value is not None:
            repo, i = value, i + step
        elif name in FILE_FLAGS and value is not None:
            hf_file, i = value, i + step
        elif name in MODEL_FLAGS and value is not None and value.startswith(HF_PREFIX):
            out += ["-m", str(resolve(value, token=token).model)]
            i += step
        else:
            out.append(flag)
            i += 1
    if hf_file and not repo:
        raise ModelReferenceError("--hf-file needs --hf-repo (-hf author/repo)")
    if repo:
        files = resolve_repo(repo, hf_file=hf_file, token=token)
        out += ["-m", str(files.model)]
        if files.mmproj and not any(a in {"-mm", "--mmproj", "--no-mmproj"} for a in out):
            out += ["--mmproj", str(files.mmproj)]
    return out
