"""``Model`` and ``Context``: llama.cpp's primitives with Python lifetimes and errors.

Thread safety: every method may be called from any thread, also while another thread closes the object (it
works or raises ``ClosedError``); see ``csrc/core.hpp`` for the lock order. A ``Context`` serves one call at a
time (calls from several threads are serialised); give each thread its own context to decode in parallel. Every
call that can take time releases the GIL.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

import numpy as np
import numpy.typing as npt

from ._native import core, reraise_unencodable
from .sampling import GREEDY, Sampler

GGUF_MAGIC = b"GGUF"
T = TypeVar("T")


class _native_attribute(Generic[T]):
    """A read-only property that reads the attribute of the same name from ``self._native``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> T:
        return cast(T, getattr(obj._native, self.name))

POOLING = {"unspecified": -1, "none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}


def _check_gguf(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    if not path.is_file():
        raise IsADirectoryError(f"model path is not a file: {path}")
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file (no GGUF magic at its start)")


class Model:
    """A GGUF model. ``vocab_only=True`` loads just the tokenizer (fast, tiny)."""

    def __init__(self, path: str | os.PathLike[str], *, n_gpu_layers: int = -1, vocab_only: bool = False,
                 use_mmap: bool = True) -> None:
        self.path = Path(path)
        _check_gguf(self.path)
        self._native = core.Model(str(self.path), n_gpu_layers=n_gpu_layers, vocab_only=vocab_only,
                                  use_mmap=use_mmap)

    # -- lifetime -------------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the model now; its contexts are closed with it."""
        self._native.close()

    @property
    def closed(self) -> bool:
        return self._native.closed

    def __enter__(self) -> Model:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self._native.description
        return f"<llama_serve.Model {self.path.name!r} {state}>"

    # -- tokenizer ------------------------------------------------------------------------------------
    def tokenize(self, text: str | bytes, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of ``text`` (bytes must be valid UTF-8)."""
        try:
            return self._native.tokenize(_as_text(text), add_special, parse_special)
        except TypeError:
            reraise_unencodable(text)
            raise

    def tokenize_batch(self, texts: Iterable[str], *, add_special: bool = True, parse_special: bool = False,
                       n_threads: int = 0) -> list[list[int]]:
        """Token ids of many texts in one call: the GIL is released for the whole batch, which is split
        over ``n_threads`` threads (0: one per core)."""
        texts = list(texts)
        try:
            return self._native.tokenize_batch(texts, add_special, parse_special, n_threads)
        except TypeError:
            reraise_unencodable(*texts)
            raise

    def detokenize(self, ids: Sequence[int], *, remove_special: bool = False, unparse_special: bool = False,
                   errors: str = "replace") -> str:
        """Text of ``ids``; bytes that are not UTF-8 are handled per ``errors`` (as ``bytes.decode``)."""
        return self.detokenize_bytes(ids, remove_special=remove_special, unparse_special=unparse_special).decode(
            "utf-8", errors)

    def detokenize_bytes(self, ids: Sequence[int], *, remove_special: bool = False,
                         unparse_special: bool = False) -> bytes:
        """The exact bytes of ``ids`` (possibly incomplete UTF-8)."""
        return self._native.detokenize_bytes(list(ids), remove_special, unparse_special)

    def token_to_piece(self, token: int, *, special: bool = True) -> bytes:
        """The bytes of one token (may be part of a UTF-8 character)."""
        return self._native.token_to_piece(token, special)

    def token_text(self, token: int) -> str:
        return self._native.token_text(token)

    def is_eog(self, token: int) -> bool:
        """Whether ``token`` ends generation (EOS, EOT, …)."""
        return self._native.is_eog(token)

    # -- facts (read from the loaded model) ------------------------------------------------------------
    @property
    def metadata(self) -> dict[str, str]:
        """GGUF metadata as strings (``general.architecture``, ``llama.context_length``, …)."""
        return self._native.metadata

    n_vocab = _native_attribute[int]("n_vocab")
    n_embd = _native_attribute[int]("n_embd")
    n_ctx_train = _native_attribute[int]("n_ctx_train")
    n_layer = _native_attribute[int]("n_layer")
    n_params = _native_attribute[int]("n_params")
    bos = _native_attribute[int]("bos")
    eos = _native_attribute[int]("eos")
    eot = _native_attribute[int]("eot")
    description = _native_attribute[str]("description")

    # -- chat -----------------------------------------------------------------------------------------
    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
                            tools: Sequence[Mapping[str, Any]] | None = None, template: str | None = None) -> str:
        """The prompt the model's own Jinja chat template makes of OpenAI-style ``messages``."""
        return self._native.apply_chat_template(json.dumps(list(messages)), json.dumps(list(tools)) if tools else "",
                                                add_generation_prompt, template or "")

    # -- contexts -------------------------------------------------------------------------------------
    def context(self, **kwargs: Any) -> Context:
        """A new :class:`Context` on this model (see its arguments)."""
        return Context(self, **kwargs)


class Context:
    """Decoding state (KV cache) on a model. ``n_ctx=0`` takes the model's training context.

    With ``n_seq_max > 1`` each sequence gets ``n_ctx / n_seq_max`` positions, unless ``kv_unified=True``
    (one cache shared by all sequences). ``flash_attn``: None lets llama.cpp choose.
    """

    def __init__(self, model: Model, *, n_ctx: int = 4096, n_batch: int = 0, n_ubatch: int = 0, n_seq_max: int = 1,
                 n_threads: int = 0, embeddings: bool = False, pooling: str = "unspecified",
                 kv_unified: bool = False, flash_attn: bool | None = None) -> None:
        if pooling not in POOLING:
            raise ValueError(f"pooling must be one of {sorted(POOLING)}, not {pooling!r}")
        self.model = model
        self._native = core.Context(model._native, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch,
                                    n_seq_max=n_seq_max, n_threads=n_threads, embeddings=embeddings,
                                    pooling=POOLING[pooling], kv_unified=kv_unified, flash_attn=flash_attn)

    def close(self) -> None:
        self._native.close()

    @property
    def closed(self) -> bool:
        return self._native.closed

    def __enter__(self) -> Context:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def n_ctx(self) -> int:
        return self._native.n_ctx

    # -- decoding -------------------------------------------------------------------------------------
    def decode(self, ids: Sequence[int], *, all: bool = False, seq_id: int = 0) -> npt.NDArray[np.float32]:
        """Append ``ids`` to sequence ``seq_id``; logits of the last token ``(n_vocab,)``, or ``(n, n_vocab)``."""
        return self._native.decode(list(ids), all, seq_id)

    def eval(self, ids: Sequence[int], *, seq_id: int = 0) -> None:
        """Like :meth:`decode` without returning logits (they stay in the context for sampling)."""
        self._native.eval(list(ids), seq_id)

    def generate(self, ids: Sequence[int], sampler: Sampler = GREEDY, *, max_tokens: int = 256,
                 stop: Sequence[str] = ()) -> Iterator[str]:
        """Decode ``ids`` then yield generated text, piece by piece.

        Pieces are whole UTF-8 characters; text that may begin a stop string is held back until it is
        known not to; generation ends at an end-of-generation token, a stop string, or ``max_tokens``.
        """
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        for token in self._sampled(ids, sampler, max_tokens):
            pending += decoder.decode(self.model.token_to_piece(token, special=False))
            cut = _first_stop(pending, stop)
            if cut is not None:
                if pending[:cut]:
                    yield pending[:cut]
                return
            held = _partial_stop_len(pending, stop)
            if len(pending) > held:
                yield pending[: len(pending) - held]
                pending = pending[len(pending) - held :]
        pending += decoder.decode(b"", final=True)
        if pending:
            yield pending

    def generate_tokens(self, ids: Sequence[int], sampler: Sampler = GREEDY, *, max_tokens: int = 256) -> list[int]:
        """Token ids generated after ``ids`` (ends at end-of-generation or ``max_tokens``)."""
        return list(self._sampled(ids, sampler, max_tokens))

    def _sampled(self, ids: Sequence[int], sampler: Sampler, max_tokens: int) -> Iterator[int]:
        """Sampled tokens, each decoded into the context only when the next one is asked for."""
        native = sampler.bind(self.model._native)
        if ids:
            self.eval(ids)
        for i in range(max_tokens):
            token = native.sample(self._native)
            native.accept(token)
            if self.model.is_eog(token):
                return
            yield token
            if i + 1 < max_tokens:
                self.eval([token])

    def embed(self, token_lists: Sequence[Sequence[int]], *, normalize: bool = True) -> npt.NDArray[np.float32]:
        """Pooled embeddings ``(n, n_embd)`` of several token lists, packed into as few decodes as fit."""
        return self._native.embed([list(t) for t in token_lists], normalize)

    # -- memory (KV cache) and state ------------------------------------------------------------------
    def n_past(self, seq_id: int = 0) -> int:
        return self._native.n_past(seq_id)

    def clear(self) -> None:
        """Forget every sequence."""
        self._native.clear()

    def remove(self, seq_id: int, p0: int = -1, p1: int = -1) -> bool:
        """Remove positions ``[p0, p1)`` of ``seq_id`` (``-1``: any sequence / open end)."""
        return self._native.remove(seq_id, p0, p1)

    def copy_seq(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        self._native.copy_seq(src, dst, p0, p1)

    def keep_seq(self, seq_id: int) -> None:
        self._native.keep_seq(seq_id)

    def save_state(self) -> bytes:
        return self._native.save_state()

    def load_state(self, state: bytes) -> None:
        self._native.load_state(state)


def _as_text(text: str | bytes) -> str:
    if isinstance(text, bytes):
        return text.decode("utf-8")  # UnicodeDecodeError (a ValueError) names the bad byte
    if not isinstance(text, str):
        raise TypeError(f"text must be str or bytes, not {type(text).__name__}")
    return text


def _first_stop(text: str, stop: Sequence[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(hits) if hits else None


def _partial_stop_len(text: str, stop: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that begins some stop string."""
    best = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if s.startswith(text[-n:]):
                best = n
                break
    return best
