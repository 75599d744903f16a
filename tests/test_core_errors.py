"""Bad input to the primitives raises a Python exception; nothing crashes, nothing leaks."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llama_serve as ls

HELLO = 15043
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def det(deterministic_model: Path) -> ls.Model:
    model = ls.Model(deterministic_model)
    yield model  # type: ignore[misc]
    model.close()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no-model\.gguf"):
        ls.Model(tmp_path / "no-model.gguf")


def test_not_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(ValueError, match="not a GGUF file"):
        ls.Model(path)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_after_the_magic(tmp_path_factory: pytest.TempPathFactory, junk: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "junk.gguf"
    path.write_bytes(b"GGUF" + junk)
    with pytest.raises(ls.LlamaError, match="failed to load model"):
        ls.Model(path)


@FUZZ
@given(st.floats(min_value=0.0, max_value=0.999))
def test_truncated_model(deterministic_model: Path, tmp_path_factory: pytest.TempPathFactory, fraction: float) -> None:
    data = deterministic_model.read_bytes()
    path = tmp_path_factory.mktemp("trunc") / "truncated.gguf"
    path.write_bytes(data[: max(4, int(len(data) * fraction))])
    with pytest.raises(ls.LlamaError):
        ls.Model(path)


def test_context_overflow(det: ls.Model) -> None:
    with det.context(n_ctx=64) as ctx:
        n_ctx = ctx.n_ctx  # llama.cpp may round the size up
        held = n_ctx - 20
        ctx.eval([1] + [HELLO] * (held - 1))
        with pytest.raises(ls.ContextOverflowError, match="context"):
            ctx.eval([HELLO] * 21)
        assert ctx.n_past() == held  # nothing of the refused batch went in
        with pytest.raises(ls.ContextOverflowError):
            list(ctx.generate([HELLO] * 10, max_tokens=100))


@FUZZ
@given(st.lists(st.integers(min_value=-(2**31), max_value=2**31 - 1), min_size=1, max_size=8))
def test_token_ids_out_of_range(det: ls.Model, ids: list[int]) -> None:
    if all(0 <= i < det.n_vocab for i in ids):
        return
    with pytest.raises(ValueError, match="out of range"):
        det.detokenize(ids)
    with det.context(n_ctx=64) as ctx, pytest.raises(ValueError, match="out of range"):
        ctx.decode(ids)


def test_other_token_id_errors(det: ls.Model) -> None:
    with pytest.raises(ValueError):
        det.token_to_piece(32000)
    with pytest.raises((ValueError, OverflowError, TypeError)):
        det.token_to_piece(2**40)
    with pytest.raises(ValueError, match="out of range"):
        ls.Sampler(logit_bias={99999: 1.0}).bind(det._native)
    with det.context(n_ctx=64) as ctx, pytest.raises(ValueError, match="at least one token"):
        ctx.decode([])


@FUZZ
@given(st.binary(min_size=1, max_size=64))
def test_invalid_utf8_is_refused(det: ls.Model, data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(UnicodeDecodeError):
            det.tokenize(data)
    else:
        assert det.tokenize(data) == det.tokenize(text)


def test_detokenize_of_partial_utf8(det: ls.Model) -> None:
    lone_byte = 3 + 0xE2  # <0xE2>, the first byte of "€", in the llama-spm vocabulary
    assert det.detokenize_bytes([lone_byte]) == b"\xe2"
    assert det.detokenize([lone_byte]) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        det.detokenize([lone_byte], errors="strict")


@pytest.mark.parametrize("grammar", ['root ::= ("a"', "root ::= undefined_rule", "not a grammar", 'root ::= [a-'])
def test_bad_grammar(det: ls.Model, grammar: str) -> None:
    with pytest.raises(ValueError, match="sampler"):
        ls.Sampler(grammar=grammar).bind(det._native)


@pytest.mark.parametrize("schema", ["{not json", '{"type": "object", "properties": 5}', '{"$ref": "#/nowhere"}'])
def test_bad_json_schema(schema: str) -> None:
    with pytest.raises(ValueError, match="JSON schema"):
        ls.Sampler(json_schema=schema)


def test_bad_chat_messages(det: ls.Model) -> None:
    with pytest.raises(ValueError, match="chat template"):
        det.apply_chat_template([{"content": "no role"}])


def test_use_after_close(deterministic_model: Path) -> None:
    model = ls.Model(deterministic_model)
    ctx = model.context(n_ctx=64)
    ctx.eval([1, HELLO])
    model.close()
    assert model.closed and ctx.closed
    with pytest.raises(ls.ClosedError, match="closed"):
        ctx.decode([HELLO])
    with pytest.raises(ls.ClosedError):
        model.tokenize("Hello")
    with pytest.raises(ls.ClosedError):
        model.context()
    model.close()  # idempotent
    ctx.close()


def test_context_manager_closes(deterministic_model: Path) -> None:
    with ls.Model(deterministic_model) as model, model.context(n_ctx=64) as ctx:
        ctx.eval([1])
    assert ctx.closed and model.closed
