"""The pybind11 primitives: model facts, decode, generation, samplers, state, threads."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

import llama_serve as ls

HELLO = 15043


@pytest.fixture(scope="module")
def det(deterministic_model: Path) -> ls.Model:
    model = ls.Model(deterministic_model)
    yield model  # type: ignore[misc]
    model.close()


@pytest.fixture(scope="module")
def rnd(random_model: Path) -> ls.Model:
    model = ls.Model(random_model)
    yield model  # type: ignore[misc]
    model.close()


def test_model_facts(det: ls.Model) -> None:
    assert det.metadata["general.architecture"] == "llama"
    assert det.n_vocab == 32000 and det.n_embd == 128 and det.n_ctx_train == 4096
    assert (det.bos, det.eos) == (1, 2)
    assert det.tokenize("Hello") == [1, HELLO]
    assert det.tokenize("Hello", add_special=False) == [HELLO]
    assert det.tokenize(b"Hello", add_special=False) == [HELLO]
    assert det.token_to_piece(HELLO) == b" Hello"
    assert det.detokenize([HELLO, 3186]) == "Hello world"  # SPM: the leading space is dropped


def test_special_tokens_parse_only_when_asked(det: ls.Model) -> None:
    assert det.tokenize("</s>", add_special=False, parse_special=True) == [2]
    assert det.tokenize("</s>", add_special=False, parse_special=False) != [2]


def test_chat_template_is_the_models_own(det: ls.Model) -> None:
    prompt = det.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert prompt == "<|user|>\nHi\n<|assistant|>\n"


def test_decode_returns_logits_as_numpy(det: ls.Model) -> None:
    with det.context(n_ctx=256) as ctx:
        logits = ctx.decode([1, HELLO])
        assert logits.shape == (32000,) and logits.dtype == np.float32
        assert int(np.argmax(logits)) == HELLO + 1
        every = ctx.decode([HELLO + 1, HELLO + 2], all=True)
        assert every.shape == (2, 32000)
        assert [int(i) for i in every.argmax(axis=1)] == [HELLO + 2, HELLO + 3]
        assert ctx.n_past() == 4


def test_flash_attention_on_and_off_give_the_same_logits(rnd: ls.Model) -> None:
    ids = rnd.tokenize("The quick brown fox jumps over the lazy dog")
    logits = []
    for flash_attn in (True, False, None):
        with rnd.context(n_ctx=256, flash_attn=flash_attn) as ctx:
            logits.append(ctx.decode(ids))
    assert np.allclose(logits[0], logits[1], atol=1e-2) and np.allclose(logits[0], logits[2], atol=1e-2)
    assert int(logits[0].argmax()) == int(logits[1].argmax())


def test_deterministic_model_generates_its_known_sequence(det: ls.Model) -> None:
    with det.context(n_ctx=256) as ctx:
        assert ctx.generate_tokens([1, HELLO], max_tokens=10) == list(range(HELLO + 1, HELLO + 11))
    with det.context(n_ctx=256) as ctx:
        text = "".join(ctx.generate([1, HELLO], max_tokens=10))
    assert text == det.detokenize(list(range(HELLO + 1, HELLO + 11)))


def test_stop_strings_cut_the_text(det: ls.Model) -> None:
    full = det.detokenize(list(range(HELLO + 1, HELLO + 11)))
    stop = full[5:9]
    with det.context(n_ctx=256) as ctx:
        text = "".join(ctx.generate([1, HELLO], max_tokens=10, stop=[stop]))
    assert text == full[: full.index(stop)]


def test_fixed_seed_reproduces_and_seeds_differ(rnd: ls.Model) -> None:
    def run(seed: int) -> list[int]:
        with rnd.context(n_ctx=256) as ctx:
            return ctx.generate_tokens(rnd.tokenize("Once upon"), ls.Sampler(temperature=1.5, top_k=0, top_p=1.0,
                                                                           min_p=0.0, seed=seed), max_tokens=24)
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_json_schema_output_parses_and_validates(rnd: ls.Model) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 150}},
              "required": ["name", "age"], "additionalProperties": False}
    sampler = ls.Sampler(temperature=1.0, seed=3, json_schema=schema)
    with rnd.context(n_ctx=512) as ctx:
        text = "".join(ctx.generate(rnd.tokenize("JSON:"), sampler, max_tokens=200))
    value = json.loads(text)
    assert set(value) == {"name", "age"} and isinstance(value["name"], str) and len(value["name"]) <= 8
    assert isinstance(value["age"], int) and 0 <= value["age"] <= 150


def test_grammar_constrains_output(rnd: ls.Model) -> None:
    sampler = ls.Sampler(temperature=1.0, seed=1, grammar='root ::= ("yes" | "no") "."')
    with rnd.context(n_ctx=256) as ctx:
        assert "".join(ctx.generate(rnd.tokenize("Answer:"), sampler, max_tokens=20)) in {"yes.", "no."}


def test_logit_bias_forces_a_token(det: ls.Model) -> None:
    with det.context(n_ctx=256) as ctx:
        out = ctx.generate_tokens([1, HELLO], ls.Sampler(temperature=0.0, logit_bias={3186: 1e4}), max_tokens=2)
    assert out == [3186, 3186]  # the bias holds at every step


def test_kv_cache_operations_and_state_round_trip(det: ls.Model) -> None:
    with det.context(n_ctx=256, n_seq_max=2) as ctx:
        ctx.eval([1, HELLO, HELLO + 1])
        assert ctx.n_past(0) == 3
        ctx.copy_seq(0, 1)
        assert ctx.n_past(1) == 3
        assert ctx.remove(0, 2, -1)
        assert ctx.n_past(0) == 2
        ctx.keep_seq(1)
        assert ctx.n_past(1) == 3
        assert ctx.remove(0)
        assert (ctx.n_past(0), ctx.n_past(1)) == (0, 3)
        for bad in (2, -5):
            with pytest.raises(ValueError, match="seq_id"):
                ctx.keep_seq(bad)
            with pytest.raises(ValueError, match="seq_id"):
                ctx.n_past(bad)
            with pytest.raises(ValueError, match="seq_id"):
                ctx.copy_seq(0, bad)
            with pytest.raises(ValueError, match="seq_id"):
                ctx.decode([1], seq_id=bad)
        state = ctx.save_state()
        ctx.clear()
        assert ctx.n_past(1) == 0
        ctx.load_state(state)
        assert ctx.n_past(1) == 3


def test_two_threads_two_contexts_match_sequential(rnd: ls.Model) -> None:
    prompts = [rnd.tokenize("The quick brown fox"), rnd.tokenize("A different prompt entirely")]

    def greedy(ids: list[int]) -> list[int]:
        with rnd.context(n_ctx=256, n_threads=1) as ctx:
            return ctx.generate_tokens(ids, max_tokens=16)

    sequential = [greedy(p) for p in prompts]
    parallel: list[list[int]] = [[], []]
    threads = [threading.Thread(target=lambda i=i: parallel.__setitem__(i, greedy(prompts[i]))) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert parallel == sequential


def test_devices_lists_the_cpu() -> None:
    devices = ls.devices()
    assert any(d["type"] == "cpu" for d in devices), devices


def test_bindings_greedy_equals_the_servers(random_model: Path, rnd: ls.Model) -> None:
    import json as _json
    import urllib.request

    from serverproc import ServerProcess

    prompt = rnd.tokenize("In a hole in the ground there lived")
    with rnd.context(n_ctx=512) as ctx:
        ours = ctx.generate_tokens(prompt, max_tokens=24)
    with ServerProcess("-m", str(random_model), "-c", "512", "-np", "1") as srv:
        srv.wait_healthy()
        body = {"prompt": prompt, "n_predict": 24, "temperature": 0, "return_tokens": True, "cache_prompt": False}
        request = urllib.request.Request(srv.base_url + "/completion", data=_json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            theirs = _json.load(resp)["tokens"]
    assert ours == theirs
