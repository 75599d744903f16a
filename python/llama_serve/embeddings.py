"""Top-level conveniences: ``embed`` and ``tokenize`` by model path, with the model kept loaded."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ._native import core
from .model import Context, Model


class Embedder:
    """A model and an embedding context, reused across calls (one call at a time)."""

    def __init__(self, path: str | os.PathLike[str], *, n_ctx: int = 0, n_seq_max: int = 64, n_threads: int = 0,
                 pooling: str = "unspecified") -> None:
        self.model = Model(path)
        n_ctx = n_ctx or min(self.model.n_ctx_train, 8192)
        self.context = Context(self.model, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_seq_max=n_seq_max,
                               n_threads=n_threads, embeddings=True, pooling=pooling, kv_unified=True)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Free the model and its context; later calls raise ``ClosedError``."""
        self.model.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, texts: Sequence[str], *, normalize: bool = True,
                 truncate: bool = False) -> npt.NDArray[np.float32]:
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts; wrap a single text in a list")
        token_lists = self.model.tokenize_batch(texts)
        if truncate:
            limit = self.context.n_ctx
            token_lists = [ids[:limit] for ids in token_lists]
        if not token_lists:
            return np.zeros((0, self.model.n_embd), dtype=np.float32)
        with self._lock:
            return self.context.embed(token_lists, normalize=normalize)


@lru_cache(maxsize=4)
def _embedder(path: str, mtime_ns: int) -> Embedder:
    return Embedder(path)


@lru_cache(maxsize=8)
def _vocab(path: str, mtime_ns: int) -> Model:
    return Model(path, vocab_only=True)


def _key(path: str | os.PathLike[str]) -> tuple[str, int]:
    resolved = Path(path).resolve()
    return str(resolved), resolved.stat().st_mtime_ns if resolved.exists() else 0


def embed(model: str | os.PathLike[str], texts: Sequence[str], *, normalize: bool = True,
          truncate: bool = False) -> npt.NDArray[np.float32]:
    """Embeddings ``(len(texts), n_embd)`` of ``texts``, many texts per decode. The model stays loaded."""
    return _embedder(*_key(model))(texts, normalize=normalize, truncate=truncate)


def tokenize(model: str | os.PathLike[str], text: str | bytes, *, add_special: bool = True,
             parse_special: bool = False) -> list[int]:
    """Token ids of ``text`` with ``model``'s tokenizer (loaded once, vocabulary only)."""
    return _vocab(*_key(model)).tokenize(text, add_special=add_special, parse_special=parse_special)


def detokenize(model: str | os.PathLike[str], ids: Sequence[int]) -> str:
    return _vocab(*_key(model)).detokenize(ids)


def devices() -> list[dict[str, object]]:
    """The ggml devices loaded from the package's backends (CPU, and GPUs where an add-on is installed)."""
    return core.devices()
