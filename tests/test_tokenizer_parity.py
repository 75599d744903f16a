"""Tokenizer parity with upstream's own test vectors (vendor/llama.cpp/models/ggml-vocab-*.gguf.inp/.out)."""

from __future__ import annotations

from pathlib import Path

import pytest

import llama_serve as ls
from llama_serve.testmodels import vocab_dir

SEPARATOR = "\n__ggml_vocab_test__\n"
VOCABS = sorted(p for p in vocab_dir().glob("ggml-vocab-*.gguf") if p.with_name(p.name + ".inp").is_file())


def read_vectors(vocab: Path) -> list[tuple[str, list[int]]]:
    """Parsed like upstream's tests/test-tokenizer-0.cpp."""
    raw = vocab.with_name(vocab.name + ".inp").read_bytes().decode("utf-8")
    outputs = vocab.with_name(vocab.name + ".out").read_text(encoding="utf-8").split("\n")
    inputs = raw.split(SEPARATOR)
    if inputs and inputs[-1].endswith("\n__ggml_vocab_test__"):
        inputs[-1] = inputs[-1][: -len("\n__ggml_vocab_test__")]
    # .out ends with a newline, so it has one more (empty) line than there are inputs
    return [(text, [int(t) for t in out.split()]) for text, out in zip(inputs, outputs, strict=False)]


def test_vocab_files_found() -> None:
    assert len(VOCABS) >= 10, VOCABS


@pytest.mark.parametrize("vocab", VOCABS, ids=lambda p: p.name.removeprefix("ggml-vocab-").removesuffix(".gguf"))
def test_upstream_vectors_match_token_for_token(vocab: Path) -> None:
    vectors = read_vectors(vocab)
    assert vectors
    with ls.Model(vocab, vocab_only=True) as model:
        got = model.tokenize_batch([text for text, _ in vectors], add_special=False, parse_special=False)
        mismatches = [(text, want, have) for (text, want), have in zip(vectors, got, strict=True) if want != have]
        assert not mismatches, mismatches[:3]
        # One at a time gives the same as the batch.
        assert [model.tokenize(text, add_special=False) for text, _ in vectors[:20]] == got[:20]


def test_spm_detokenize_round_trips_every_token_and_codepoint() -> None:
    """Upstream's tests/test-tokenizer-1-spm.cpp, through the bindings."""
    with ls.Model(vocab_dir() / "ggml-vocab-llama-spm.gguf", vocab_only=True) as model:
        for token in range(model.n_vocab):
            piece = model.detokenize_bytes([token], unparse_special=True)
            try:
                text = piece.decode("utf-8")
            except UnicodeDecodeError:
                continue  # a lone byte token (<0x80>…<0xFF>) is not text: our tokenize takes only valid UTF-8
            ids = model.tokenize(text, add_special=False, parse_special=True)
            assert model.detokenize_bytes(ids, unparse_special=True) == piece, token
        codepoints = [cp for cp in range(0, 0x110000, 3) if not (0xD800 <= cp <= 0xDFFF or 0x40000 <= cp <= 0xE0000)]
        texts = [chr(cp) for cp in codepoints]
        token_lists = model.tokenize_batch(texts, add_special=False, parse_special=True)
        for cp, text, ids in zip(codepoints, texts, token_lists, strict=True):
            if cp != 9601:
                assert model.detokenize(ids, unparse_special=True) == text, hex(cp)
