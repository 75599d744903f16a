"""Reliability of the served path (issue #9): hostile input, load, disconnects, kills and cache faults.

Real server processes started through ``ls.Server`` / ``ls.ServerPool``, real clients (the official ``openai``
client, and raw HTTP where a client library would refuse to send the request). After each hostile request the
server must still be alive and must still continue "Hello" with the deterministic tokens.

Where upstream llama-server b11312 does not behave (a 500 for a client error, a crash, a silent truncation) the test
asserts what it actually does, with an ``UPSTREAM:`` comment saying what is wrong; ``docs/reliability.md`` lists
each one. The figures (latency, throughput, peak RSS, detection and recovery times) are printed and written to
``build/test-artifacts/reliability.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.client
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

import llama_serve as ls
from fakehub import FakeHub
from llama_serve import testmodels

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("LLAMA_SERVE_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
TEMPLATES = ROOT / "vendor" / "llama.cpp" / "models" / "templates"
HELLO = 15043  # "Hello" in the llama-spm vocabulary; the deterministic model continues t with t+1, t+2, ...
MB = 1 << 20
FIGURES: dict[str, Any] = {}


# --------------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    if FIGURES:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / "reliability.json"
        old = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**old, **FIGURES}, indent=2, sort_keys=True) + "\n")


def figure(name: str, value: Any) -> None:
    FIGURES[name] = value
    print(f"[reliability] {name} = {value}")


@pytest.fixture(scope="module")
def pieces(deterministic_model: Path) -> dict[int, bytes]:
    with ls.Model(deterministic_model, vocab_only=True) as m:
        return {t: m.token_to_piece(t) for t in range(HELLO, HELLO + 600)}


def continuation(pieces: dict[int, bytes], after: int, n: int) -> str:
    """The text the deterministic model streams after token ``after``: the pieces of after+1 .. after+n."""
    return b"".join(pieces[t] for t in range(after + 1, after + 1 + n)).decode()


def post(srv: ls.Endpoint, path: str, body: bytes, *, timeout: float = 60.0) -> tuple[int, Any]:
    """A raw POST (no client library in the way): HTTP status and the parsed JSON body (or the raw bytes)."""
    host, port = srv.base_url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, data


def assert_serving(srv: ls.Server, pieces: dict[int, bytes]) -> None:
    """Alive, healthy, and a plain completion still returns the deterministic tokens."""
    assert srv.running, f"server died (exit {srv.proc.returncode}):\n" + "\n".join(srv.logs(30))
    done = srv.openai(max_retries=0, timeout=30).completions.create(model="det", prompt="Hello", max_tokens=3,
                                                                    temperature=0)
    assert done.choices[0].text == continuation(pieces, HELLO, 3)
    assert srv.health() == 200 and srv.running


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the process's peak resident set size since it started."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 3), "p95": round(cuts[94], 3), "p99": round(cuts[98], 3),
            "max": round(max(values), 3)}


@pytest.fixture(scope="module")
def det(deterministic_model: Path) -> Iterator[ls.Server]:
    """The hostile-input target: small context (256 tokens per slot), two slots."""
    with ls.Server(deterministic_model, ctx_size=512, parallel=2, alias="det") as srv:
        yield srv


# --------------------------------------------------------------------------------------------- hostile input

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
HI = [{"role": "user", "content": "Hi"}]
# A response-format grammar is fed the generation prompt token by token; with a SentencePiece vocabulary and a
# template whose markers are text, its first token (" <", with the vocabulary's leading space) is skipped, so the
# grammar fails on the next one whatever the schema. Upstream said only "std::exception"; patch 0006 names it.
PREFILL = "does not accept the text the prompt already ends with"
PREFILL_NOTE = "UPSTREAM: 400, but for the generation prompt's first token, not for the schema"
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
# Upstream answers these 500 server_error (a JSON exception escapes the handler as a std::exception), and the
# openai client retries every 5xx; our patch 0004 makes them 400 invalid_request_error.
PATCHED_400 = "patch 0004: upstream b11312 answers 500 server_error"
IGNORED = "UPSTREAM: accepted with HTTP 200; the malformed field is silently ignored"


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def schema_format(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}


@dataclass(frozen=True)
class Case:
    id: str
    path: str
    body: bytes
    status: int
    message: str = ""  # a fragment of error.message (error responses)
    upstream: str = ""  # UPSTREAM: what is wrong with what the server does (see docs/reliability.md)


CASES = [
    # Not JSON at all.
    Case("json-truncated", COMPLETIONS, b'{"prompt": "Hello", "max_tokens": 2', 400, "parse error", PATCHED_400),
    Case("json-empty-body", COMPLETIONS, b"", 400, "empty input", PATCHED_400),
    Case("json-nan-literal", COMPLETIONS, b'{"prompt": "Hello", "temperature": NaN}', 400, "parse error", PATCHED_400),
    Case("invalid-utf8", COMPLETIONS, b'{"prompt": "Hel\xff\xfelo", "max_tokens": 2}', 400, "ill-formed UTF-8",
         PATCHED_400),
    Case("lone-surrogate-escape", COMPLETIONS, b'{"prompt": "Hel\\ud800lo", "max_tokens": 2}', 400, "surrogate",
         PATCHED_400),
    Case("deep-json-unclosed", COMPLETIONS, b'{"prompt": "Hello", "x": ' + b"[" * 100_000, 400, "parse error",
         PATCHED_400),
    # Valid JSON, wrong shape or types: 400 invalid_request_error.
    Case("body-is-an-array", CHAT, b"[1, 2, 3]", 400, "'messages' is required"),
    Case("messages-a-string", CHAT, body(messages="Hi"), 400, "Expected 'messages' to be an array"),
    Case("messages-missing", CHAT, body(model="det"), 400, "'messages' is required"),
    Case("message-content-int", CHAT, body(messages=[{"role": "user", "content": 5}]), 400,
         "Expected 'content' to be a string or an array"),
    Case("message-without-content", CHAT, body(messages=[{"role": "user"}]), 400, "must contain 'content'"),
    Case("message-a-string", CHAT, body(messages=["Hi"]), 400, "must contain 'content'"),
    Case("message-without-role", CHAT, body(messages=[{"content": "Hi"}]), 400, "Missing 'role'", PATCHED_400),
    Case("content-part-unknown-type", CHAT, body(messages=[{"role": "user", "content": [{"type": "hologram"}]}]),
         400, "unsupported content[].type"),
    Case("content-part-image-on-text-model", CHAT, body(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]), 500,
         "image input is not supported",
         "UPSTREAM: an image sent to a text-only model is answered with 500 server_error, not 400"),
    Case("max_tokens-a-string", COMPLETIONS, body(prompt="Hello", max_tokens="five"), 400, "max_tokens"),
    Case("max_tokens-negative", COMPLETIONS, body(prompt="Hello", max_tokens=-5), 400, "max_tokens"),
    Case("max_tokens-1e30", COMPLETIONS, body(prompt="Hello", max_tokens=10**30), 400, "max_tokens",
         "UPSTREAM: 400 as due, but the message reports the value wrapped to 32 bits (-2147483648)"),
    Case("temperature-an-object", COMPLETIONS, body(prompt="Hello", max_tokens=2, temperature={"a": 1}), 400,
         "temperature"),
    Case("seed-a-string", COMPLETIONS, body(prompt="Hello", max_tokens=2, seed="x"), 400, "seed"),
    Case("stream-a-string", COMPLETIONS, body(prompt="Hello", max_tokens=2, stream="yes"), 400, "stream"),
    Case("n-1000", COMPLETIONS, body(prompt="Hello", max_tokens=2, n=1000), 400, "'n'"),
    Case("n_probs-a-string", COMPLETIONS, body(prompt="Hello", max_tokens=2, n_probs="many"), 400, "n_probs"),
    Case("dry_sequence_breakers-int", COMPLETIONS, body(prompt="Hello", max_tokens=2, dry_multiplier=1,
                                                        dry_sequence_breakers=5), 400, "dry_sequence_breakers"),
    Case("prompt-token-out-of-range", COMPLETIONS, body(prompt=[10**12], max_tokens=2), 400, "invalid tokens"),
    Case("prompt-token-negative", COMPLETIONS, body(prompt=[-1], max_tokens=2), 400, "invalid tokens"),
    Case("prompt-an-object", COMPLETIONS, body(prompt={"a": 1}, max_tokens=2), 400, "\"prompt\" elements"),
    Case("prompt-missing", COMPLETIONS, body(max_tokens=2), 400, "prompt"),
    Case("prompt-over-context", COMPLETIONS, body(prompt="Hello " * 400, max_tokens=2), 400,
         "exceeds the available context size"),
    Case("prompt-over-context-streaming", COMPLETIONS, body(prompt="Hello " * 400, max_tokens=2, stream=True), 400,
         "exceeds the available context size"),
    Case("chat-over-context", CHAT, body(messages=[{"role": "user", "content": "Hello " * 400}], max_tokens=2), 400,
         "exceeds the available context size"),
    Case("response_format-type-unknown", CHAT, body(messages=HI, max_tokens=2, response_format={"type": "xml"}), 400,
         "response_format type must be one of"),
    Case("json_schema-type-unknown", CHAT, body(messages=HI, max_tokens=2,
                                                response_format=schema_format({"type": "nonsense"})), 400,
         "unrecognized type nonsense"),
    Case("json_schema-type-not-a-string", CHAT, body(messages=HI, max_tokens=2,
                                                     response_format=schema_format({"type": 7})), 400,
         "type must be a string"),
    Case("json_schema-ref-unresolvable", CHAT, body(messages=HI, max_tokens=2,
                                                    response_format=schema_format({"$ref": "#/nope"})), 400,
         "cannot resolve $ref"),
    Case("json_schema-minimum-a-string", CHAT, body(messages=HI, max_tokens=2, response_format=schema_format(
        {"type": "integer", "minimum": "a"})), 400, "minimum must be a number"),
    Case("json_schema-bad-pattern", CHAT, body(messages=HI, max_tokens=2, response_format=schema_format(
        {"type": "string", "pattern": "(("})), 400, PREFILL, PREFILL_NOTE),
    Case("json_schema-missing", CHAT, body(messages=HI, max_tokens=2, response_format={"type": "json_schema"}), 400,
         PREFILL, PREFILL_NOTE),
    Case("grammar-invalid", COMPLETIONS, body(prompt="Hello", max_tokens=2, grammar="root ::= ((("), 400,
         "failed to parse grammar"),
    Case("tools-not-a-list", CHAT, body(messages=HI, max_tokens=2, tools="f"), 400,
         "Expected 'tools' to be an array"),
    Case("tool-without-name", CHAT, body(messages=HI, max_tokens=2, tools=[
        {"type": "function", "function": {"parameters": {"type": "object"}}}]), 400, "key 'name' not found"),  # 0002
    Case("tool-name-not-a-string", CHAT, body(messages=HI, max_tokens=2, tools=[
        {"type": "function", "function": {"name": 5, "parameters": {"type": "object"}}}]), 400,
         "type must be string"),
    Case("tool-type-unknown", CHAT, body(messages=HI, max_tokens=2, tools=[{"type": "grenade", "function": {
        "name": "f"}}]), 400, "Unsupported tool type"),
    Case("tool-a-string", CHAT, body(messages=HI, max_tokens=2, tools=["f"]), 400, "Missing tool type"),
    Case("tool-without-function", CHAT, body(messages=HI, max_tokens=2, tools=[{"type": "function"}]), 400,
         "Missing tool function"),
    Case("tool_choice-unknown", CHAT, body(messages=HI, max_tokens=2, tools=[TOOL], tool_choice="sometimes"), 400,
         "Invalid tool_choice"),
    Case("detokenize-id-out-of-range", "/detokenize", body(tokens=[999_999_999]), 500, "_M_range_check",
         "UPSTREAM: an out-of-range token id is caught by a bounds check (no crash) but answered 500, not 400"),
    Case("detokenize-not-a-list", "/detokenize", body(tokens="abc"), 400, "type must be array", PATCHED_400),
    Case("tokenize-content-an-object", "/tokenize", body(content={"a": 1}), 400, "type must be string",
         PATCHED_400),
    # Routes and features that are not there.
    Case("unknown-route", "/v1/frobnicate", body(prompt="Hello"), 404, "File Not Found"),
    Case("embeddings-not-enabled", "/v1/embeddings", body(input="Hello"), 501, "--embeddings"),
    Case("rerank-not-enabled", "/v1/rerank", body(query="a", documents=["b"]), 501, "--reranking"),
    Case("slot-save-not-enabled", "/slots/0?action=save", body(filename="../../x"), 501, "--slot-save-path"),
    # Accepted with 200 (lenient): the request is served, the odd part ignored.
    Case("messages-empty", CHAT, body(messages=[], max_tokens=2), 200, "",
         "UPSTREAM: OpenAI rejects an empty messages list; llama-server generates from an empty prompt"),
    Case("role-unknown", CHAT, body(messages=[{"role": "wizard", "content": "Hi"}], max_tokens=2), 200, "",
         "UPSTREAM: an unknown role is passed to the chat template instead of being rejected"),
    Case("unknown-fields", COMPLETIONS, body(prompt="Hello", max_tokens=2, frobnicate=[1, {"x": None}]), 200),
    Case("unknown-model-name", COMPLETIONS, body(model="gpt-9", prompt="Hello", max_tokens=2), 200),  # one model
    Case("logit_bias-a-string", COMPLETIONS, body(prompt="Hello", max_tokens=2, logit_bias="x"), 200, "", IGNORED),
    Case("logit_bias-bad-key", COMPLETIONS, body(prompt="Hello", max_tokens=2, logit_bias={"abc": 5}), 200, "",
         IGNORED),
    Case("logit_bias-id-out-of-range", COMPLETIONS, body(prompt="Hello", max_tokens=2,
                                                         logit_bias={"99999999": 5}), 200, "", IGNORED),
    Case("logit_bias-value-a-string", COMPLETIONS, body(prompt="Hello", max_tokens=2, logit_bias={"15044": "x"}), 200,
         "", IGNORED),
    Case("n_probs-negative", COMPLETIONS, body(prompt="Hello", max_tokens=2, n_probs=-3), 200, "", IGNORED),
    Case("stop-an-object", COMPLETIONS, body(prompt="Hello", max_tokens=2, stop={"a": 1}), 200, "", IGNORED),
    Case("response_format-a-string", CHAT, body(messages=HI, max_tokens=2, response_format="json"), 200, "", IGNORED),
    Case("json_schema-schema-a-string", CHAT, body(messages=HI, max_tokens=2, response_format=schema_format("abc")),
         200, "", IGNORED),
    Case("lora-unknown-id", COMPLETIONS, body(prompt="Hello", max_tokens=2, lora=[{"id": 99, "scale": 1}]), 200, "",
         IGNORED),
    Case("nul-character-in-prompt", COMPLETIONS, body(prompt="Hel\u0000lo", max_tokens=2), 200),
    Case("deep-json-1e5-unknown-field", COMPLETIONS,
         b'{"prompt": "Hello", "max_tokens": 2, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 200),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_request_gets_an_openai_error_and_the_server_keeps_serving(
        det: ls.Server, pieces: dict[int, bytes], case: Case) -> None:
    status, reply = post(det, case.path, case.body, timeout=30)
    assert status == case.status, (case.id, status, reply)
    if status >= 400:
        assert isinstance(reply, dict) and isinstance(reply.get("error"), dict), reply  # OpenAI-style error body
        error = reply["error"]
        assert case.message in error["message"], error
        assert error.get("code") == status and error.get("type"), error
        expected_type = {400: "invalid_request_error", 404: "not_found_error", 500: "server_error",
                         501: "not_supported_error"}[status]
        assert error["type"] in (expected_type, "exceed_context_size_error"), error
    else:
        assert isinstance(reply, dict) and reply["choices"], reply
    assert_serving(det, pieces)


@pytest.mark.timeout(120)
def test_openai_client_raises_its_documented_exceptions(det: ls.Server, pieces: dict[int, bytes]) -> None:
    client = det.openai(max_retries=0, timeout=30)
    bad: list[dict[str, Any]] = [
        {"messages": "Hi"}, {"messages": HI, "max_tokens": "five"}, {"messages": HI, "temperature": {"a": 1}},
        {"messages": [{"role": "user", "content": "Hello " * 400}]},
        {"messages": HI, "response_format": schema_format({"type": "nonsense"})},
        {"messages": HI, "tools": [{"type": "function", "function": {"parameters": {}}}]},
    ]
    for kwargs in bad:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="det", **kwargs)
        assert info.value.status_code == 400 and isinstance(info.value.body, dict) and info.value.body["message"]
    # Over the context while streaming: the error comes before the first chunk, from create() itself.
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="det", prompt="Hello " * 400, max_tokens=2, stream=True)
    assert isinstance(info.value.body, dict) and info.value.body["type"] == "exceed_context_size_error"
    with pytest.raises(openai.NotFoundError):
        client.post("/frobnicate", cast_to=object, body={})
    # A feature the server was not started with: 501. UPSTREAM: any 5xx is "retry later" to the openai client.
    with pytest.raises(openai.InternalServerError) as server_error:
        client.embeddings.create(model="det", input="Hello")
    assert server_error.value.status_code == 501
    # A lone surrogate never leaves the client: it cannot be encoded as UTF-8.
    with pytest.raises(UnicodeEncodeError):
        client.completions.create(model="det", prompt="Hel\ud800lo", max_tokens=2)
    # Not JSON: a 400 (patch 0004; upstream's 500 made the client, with its default max_retries=2, send it three
    # times), so it is sent once.
    sent: list[str] = []
    counting = det.openai(http_client=openai.DefaultHttpxClient(event_hooks={"request": [
        lambda request: sent.append(str(request.url))]}))
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as info:
        counting.post("/completions", cast_to=object, content=b'{"prompt": "Hel',
                      options={"headers": {"Content-Type": "application/json"}})
    assert info.value.status_code == 400 and len(sent) == 1, sent
    figure("malformed_json_retries_by_openai_client", {"requests_sent": len(sent),
                                                        "seconds": round(time.monotonic() - started, 2)})
    assert_serving(det, pieces)


@pytest.mark.timeout(60)
def test_max_tokens_beyond_32_bits_is_silently_wrapped(det: ls.Server, pieces: dict[int, bytes]) -> None:
    """UPSTREAM: max_tokens is read into a 32-bit int before its range check: 2**32 + 3 becomes 3 and the reply
    stops after 3 tokens with finish_reason "length", no error. (10**30 and 2**31 are rejected, see CASES.)"""
    done = det.openai(max_retries=0).completions.create(model="det", prompt="Hello", max_tokens=2**32 + 3,
                                                        temperature=0)
    assert done.usage is not None and done.usage.completion_tokens == 3
    assert done.choices[0].finish_reason == "length" and done.choices[0].text == continuation(pieces, HELLO, 3)


@pytest.mark.timeout(60)
def test_n_probs_is_clamped_to_the_vocabulary_not_bounded(det: ls.Server, pieces: dict[int, bytes]) -> None:
    """UPSTREAM: n_probs has no upper bound but the vocabulary: 10**9 returns all 32,000 candidates per token,
    about 3 MB of JSON per generated token (a 32-token reply is ~96 MB and takes seconds)."""
    started = time.monotonic()
    status, reply = post(det, COMPLETIONS, body(prompt="Hello", max_tokens=2, temperature=0, n_probs=10**9))
    assert status == 200
    per_token = reply["choices"][0]["logprobs"]["content"]
    assert len(per_token) == 2 and all(len(t["top_logprobs"]) == 32_000 for t in per_token)
    figure("n_probs_1e9_two_tokens", {"response_MB": round(len(json.dumps(reply)) / MB, 1),
                                      "seconds": round(time.monotonic() - started, 2)})
    assert_serving(det, pieces)


@pytest.mark.timeout(180)
def test_huge_bodies(det: ls.Server, pieces: dict[int, bytes]) -> None:
    client = det.openai(max_retries=0, timeout=150)
    before = peak_rss_kib(det.pid)
    # 50 MB in a field nobody reads: parsed and served.
    started = time.monotonic()
    status, reply = post(det, COMPLETIONS, body(prompt="Hello", max_tokens=3, temperature=0, padding="x" * (50 * MB)))
    assert status == 200 and reply["choices"][0]["text"] == continuation(pieces, HELLO, 3)
    figure("body_50MB_unknown_field_seconds", round(time.monotonic() - started, 2))
    # A 10,000-message chat over a 256-token context: 400 exceed_context_size_error.
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="det", messages=[{"role": "user", "content": "hi"}] * 10_000,
                                       max_tokens=2)
    assert isinstance(info.value.body, dict) and info.value.body["type"] == "exceed_context_size_error"
    figure("chat_10000_messages_seconds", round(time.monotonic() - started, 2))
    # A 20 MB prompt. UPSTREAM: the whole prompt is tokenized before it is compared with the context size, so the
    # 400 comes after seconds of CPU and a peak of well over a gigabyte. Other requests are served meanwhile.
    outcome: dict[str, Any] = {}

    def huge() -> None:
        started = time.monotonic()
        try:
            client.completions.create(model="det", prompt="Hello " * (20 * MB // 6), max_tokens=2)
        except openai.BadRequestError as e:
            outcome["error"] = e
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=huge)
    worker.start()
    time.sleep(0.5)
    started = time.monotonic()
    assert_serving(det, pieces)
    served_meanwhile = time.monotonic() - started
    worker.join(170)
    error = outcome.get("error")
    assert isinstance(error, openai.BadRequestError) and isinstance(error.body, dict), outcome
    assert error.body["type"] == "exceed_context_size_error" and error.body["n_prompt_tokens"] > 3_000_000
    figure("prompt_20MB", {"seconds_to_400": round(outcome["seconds"], 2),
                           "server_peak_rss_MiB_before": before // 1024,
                           "server_peak_rss_MiB_after": peak_rss_kib(det.pid) // 1024,
                           "other_request_served_in_s": round(served_meanwhile, 2),
                           "n_prompt_tokens": error.body["n_prompt_tokens"],
                           "load_average_1min": round(os.getloadavg()[0], 2)})
    assert_serving(det, pieces)


@pytest.mark.timeout(120)
def test_malformed_tool_parameters_on_a_tool_template(deterministic_model: Path) -> None:
    """Tool definitions reach a template that renders them (Hermes 3): parameters that are not a schema are 400."""
    model = testmodels.tiny_random(vocab="ggml-vocab-qwen2.gguf")
    template = TEMPLATES / "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja"
    if not template.is_file():
        pytest.skip(f"{template} not found (needs the llama.cpp tree)")
    rejected = {
        "parameters-a-string": ("abc", "schema must be an object"),
        "parameters-a-list": ([1, 2], "schema must be an object"),
        "parameters-type-unknown": ({"type": "bogus"}, "unrecognized type bogus"),
    }
    with ls.Server(model, ctx_size=2048, parallel=1,
                   extra_args=["--jinja", "--chat-template-file", str(template)]) as srv:
        client = srv.openai(max_retries=0, timeout=60)
        for name, (parameters, message) in rejected.items():
            for choice in ("auto", "required"):
                with pytest.raises(openai.BadRequestError, match=message):
                    client.chat.completions.create(model="m", messages=HI, max_tokens=2, tool_choice=choice, tools=[
                        {"type": "function", "function": {"name": "f", "parameters": parameters}}])
            assert srv.running, name
        # UPSTREAM: lenient, served with 200: an empty name, "required" that is not a list, duplicate names.
        lenient: list[list[Any]] = [
            [{"type": "function", "function": {"name": "", "parameters": {"type": "object"}}}],
            [{"type": "function", "function": {"name": "f", "parameters": {
                "type": "object", "properties": {"a": {"type": "string"}}, "required": "a"}}}],
            [TOOL, TOOL],
        ]
        for tools in lenient:
            assert client.chat.completions.create(model="m", messages=HI, max_tokens=2, tools=tools).choices
        assert srv.running and srv.health() == 200


def nested_object_schema(depth: int) -> bytes:
    inner = '{"type": "object", "properties": {"a": ' * depth + '{"type": "integer"}' + "}}" * depth
    return ('{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "response_format": '
            '{"type": "json_schema", "json_schema": {"name": "s", "schema": ' + inner + "}}}").encode()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["grammar-50000-nested-groups", "json-schema-12000-nested-objects"])
def test_deeply_nested_grammar_or_schema_is_refused(det: ls.Server, pieces: dict[int, bytes], kind: str) -> None:
    """Upstream's recursive-descent parsers overflow the stack on one request with a deeply nested grammar (about
    20,000 nested groups: 48 KB) or JSON schema (about 6,000 nested objects: 250 KB): SIGSEGV, every in-flight
    request gone, and a retrying client kills the restarted replica too. Our patch 0004 refuses nesting deeper
    than 1,000 grammar groups or 1,024 JSON levels in a schema: a 400, and the server keeps serving."""
    started = time.monotonic()
    if kind.startswith("grammar"):
        grammar = "root ::= " + "(" * 50_000 + '"a"' + ")" * 50_000
        with pytest.raises(openai.BadRequestError, match="failed to parse grammar"):  # the depth is logged
            det.openai(max_retries=0, timeout=60).completions.create(model="det", prompt="Hello", max_tokens=2,
                                                                   extra_body={"grammar": grammar})
    else:
        status, reply = post(det, CHAT, nested_object_schema(12_000), timeout=60)
        assert status == 400 and "nested deeper" in json.dumps(reply), reply
    figure(f"refused_{kind}_seconds", round(time.monotonic() - started, 2))
    assert det.running
    assert_serving(det, pieces)


@pytest.mark.timeout(120)
def test_stalled_clients_block_new_requests_until_the_read_timeout(deterministic_model: Path,
                                                                   pieces: dict[int, bytes]) -> None:
    """Clients that send half a request and wait. UPSTREAM: each holds an HTTP thread until the read timeout
    (--timeout, 600 s by default); once the pool (n_parallel + 4 threads, plus up to 1024 spawned on demand) is
    taken, new requests queue behind them: the server looks hung. Seen with as few as 7 stalled clients at
    parallel=2, because the pool only spawns a thread for a connection that arrives when none is idle; 1,100
    saturates it every time. A short --timeout bounds the stall."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1_100
    if soft < want + 200:
        if hard != resource.RLIM_INFINITY and hard < want + 200:
            pytest.skip(f"needs {want + 200} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want + 200, hard))

    @contextlib.contextmanager
    def stalled(srv: ls.Server, n: int) -> Iterator[None]:
        host, port = srv.base_url.removeprefix("http://").rsplit(":", 1)
        socks = []
        try:
            for _ in range(n):
                sock = socket.create_connection((host, int(port)), timeout=10)
                sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"pro")
                socks.append(sock)
            time.sleep(0.5)
            yield
        finally:
            for sock in socks:
                sock.close()

    with ls.Server(deterministic_model, ctx_size=512, parallel=2, alias="det") as srv:
        with stalled(srv, want):
            with pytest.raises(openai.APITimeoutError):
                srv.openai(max_retries=0, timeout=3).completions.create(model="det", prompt="Hello", max_tokens=2)
            assert srv.running
        started = time.monotonic()
        while time.monotonic() - started < 20:  # the stalled connections are gone: served again
            with contextlib.suppress(openai.APITimeoutError):
                assert_serving(srv, pieces)
                break
        else:
            raise AssertionError("not served after the stalled clients left")
    bounded = ls.Server(deterministic_model, ctx_size=512, parallel=2, alias="det", extra_args=["--timeout", "2"])
    with bounded as srv, stalled(srv, want):
        started = time.monotonic()
        done = srv.openai(max_retries=0, timeout=30).completions.create(model="det", prompt="Hello", max_tokens=3,
                                                                       temperature=0)
        assert done.choices[0].text == continuation(pieces, HELLO, 3)
        figure("stalled_clients_1100_with_timeout_2_served_after_s", round(time.monotonic() - started, 2))


# ------------------------------------------------------------------------------------- load and disconnects


@pytest.fixture(scope="module")
def busy(deterministic_model: Path) -> Iterator[ls.Server]:
    """8 slots of 512 tokens, one compute thread: the clients share this machine's two cores, and with -t 2 ggml's
    workers spin while waiting for a descheduled peer (3-6x slower and noisy here; docs/reliability.md)."""
    with ls.Server(deterministic_model, ctx_size=8 * 512, parallel=8, alias="det", extra_args=["-t", "1"]) as srv:
        yield srv


@dataclass
class StreamResult:
    index: int
    text: str
    chunks: int  # chunks that carried text
    completion_tokens: int
    finish_reason: str | None
    first_chunk_s: float
    total_s: float


async def stream_one(client: openai.AsyncOpenAI, index: int, max_tokens: int) -> StreamResult:
    started = time.monotonic()
    first: float | None = None
    text: list[str] = []
    usage = 0
    finish = None
    stream = await client.completions.create(model="det", prompt=[HELLO + index], max_tokens=max_tokens,
                                             temperature=0, stream=True, stream_options={"include_usage": True},
                                             extra_body={"ignore_eos": True})
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.text:
                first = first if first is not None else time.monotonic() - started
                text.append(choice.text)
            finish = choice.finish_reason or finish
    return StreamResult(index, "".join(text), len(text), usage, finish, first or 0.0, time.monotonic() - started)


@pytest.mark.timeout(300)
def test_64_concurrent_streams_on_8_slots(busy: ls.Server, pieces: dict[int, bytes]) -> None:
    clients, tokens = 64, 32
    assert_serving(busy, pieces)
    rss_before = peak_rss_kib(busy.pid)
    predicted_before = busy.metrics().tokens_predicted_total
    cpu_before = cpu_seconds(busy.pid)

    async def run() -> tuple[float, list[StreamResult | BaseException]]:
        client = busy.async_openai(max_retries=0, timeout=240)
        started = time.monotonic()
        results = await asyncio.gather(*(stream_one(client, i, tokens) for i in range(clients)),
                                       return_exceptions=True)
        await client.close()
        return time.monotonic() - started, results

    wall, results = asyncio.run(run())
    server_cpu = cpu_seconds(busy.pid) - cpu_before
    done = [r for r in results if isinstance(r, StreamResult)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError) and r.status_code in (429, 503)]
    assert len(done) + len(refused) == clients, [r for r in results if not isinstance(r, StreamResult)][:3]
    for r in done:  # every token, in order, nothing from another stream: prompt HELLO+i continues HELLO+i+1, ...
        assert (r.completion_tokens, r.chunks, r.finish_reason) == (tokens, tokens, "length"), r
        assert r.text == continuation(pieces, HELLO + r.index, tokens), r
    metrics = busy.metrics()
    assert metrics.requests_processing == 0 and metrics.requests_deferred == 0
    assert metrics.tokens_predicted_total - predicted_before == len(done) * tokens
    assert_serving(busy, pieces)
    figure("load_64_streams_parallel_8", {
        "completed": len(done), "refused_429_503": len(refused), "tokens_each": tokens,
        "wall_s": round(wall, 2), "throughput_tokens_per_s": round(len(done) * tokens / wall, 1),
        "server_cpu_s": round(server_cpu, 2),
        "latency_s": percentiles([r.total_s for r in done]),
        "first_token_s": percentiles([r.first_chunk_s for r in done]),
        "server_peak_rss_MiB_before": round(rss_before / 1024, 1),
        "server_peak_rss_MiB_after": round(peak_rss_kib(busy.pid) / 1024, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),  # this machine is shared: the figures depend on it
    })


@pytest.mark.timeout(120)
def test_disconnects_mid_stream_free_their_slots(busy: ls.Server, pieces: dict[int, bytes]) -> None:
    streams, max_tokens = 16, 400
    predicted_before = busy.metrics().tokens_predicted_total

    async def open_and_drop(client: openai.AsyncOpenAI, index: int) -> int:
        stream = await client.completions.create(model="det", prompt=[HELLO + index], max_tokens=max_tokens,
                                                 temperature=0, stream=True, extra_body={"ignore_eos": True})
        received = 0
        async for _ in stream:
            received += 1
            if received == 2:
                break
        await stream.close()
        return received

    async def run() -> list[int]:
        client = busy.async_openai(max_retries=0, timeout=60)
        received = await asyncio.gather(*(open_and_drop(client, i) for i in range(streams)))
        await client.close()
        return received

    assert asyncio.run(run()) == [2] * streams
    closed = time.monotonic()
    while True:
        busy_slots = [slot["id"] for slot in busy.slots() if slot["is_processing"]]
        metrics = busy.metrics()
        if not busy_slots and metrics.requests_processing == 0 and metrics.requests_deferred == 0:
            break
        assert time.monotonic() - closed < 5, f"slots {busy_slots} still busy 5 s after their clients left"
        time.sleep(0.01)
    recovery = time.monotonic() - closed
    generated = metrics.tokens_predicted_total - predicted_before
    assert generated < streams * max_tokens / 4, f"{generated} tokens: generation went on after the disconnects"
    assert_serving(busy, pieces)
    figure("disconnect_16_streams", {"slots_idle_after_s": round(recovery, 3), "tokens_generated": int(generated),
                                     "tokens_if_not_cancelled": streams * max_tokens})


# ------------------------------------------------------------------------------------------------- kills


def kill_after_two_chunks(stream: Any, pid: int) -> float:
    """SIGKILL ``pid`` once ``stream`` has yielded two chunks; seconds until the client raises."""
    chunks = iter(stream)
    next(chunks), next(chunks)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    with pytest.raises(openai.APIConnectionError):
        for _ in chunks:
            pass
    return time.monotonic() - killed


@pytest.mark.timeout(120)
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_sigkill_mid_stream_is_a_prompt_connection_error(deterministic_model: Path, flavour: str) -> None:
    with ls.Server(deterministic_model, ctx_size=4096, parallel=1, alias="det") as srv:
        kwargs: dict[str, Any] = {"model": "det", "prompt": "Hello", "max_tokens": 3000, "stream": True,
                                  "extra_body": {"ignore_eos": True}}
        if flavour == "sync":
            detected = kill_after_two_chunks(srv.openai(max_retries=0, timeout=60).completions.create(**kwargs),
                                             srv.pid)
        else:
            async def run() -> float:
                client = srv.async_openai(max_retries=0, timeout=60)
                stream = await client.completions.create(**kwargs)
                chunks = aiter(stream)
                await anext(chunks), await anext(chunks)
                os.kill(srv.pid, signal.SIGKILL)
                killed = time.monotonic()
                with pytest.raises(openai.APIConnectionError):
                    async for _ in chunks:
                        pass
                return time.monotonic() - killed

            detected = asyncio.run(run())
        assert detected < 10
        assert srv.proc.wait(10) == -signal.SIGKILL and not srv.running and srv.health() == 0
        started = time.monotonic()
        with pytest.raises(openai.APIConnectionError):  # the next request: refused at once
            srv.openai(max_retries=0, timeout=10).completions.create(model="det", prompt="Hello", max_tokens=2)
        figure(f"sigkill_mid_stream_{flavour}", {"error_after_s": round(detected, 3),
                                                 "next_request_error_after_s": round(time.monotonic() - started, 3)})


@pytest.mark.timeout(120)
def test_pool_replica_killed_mid_stream(deterministic_model: Path, pieces: dict[int, bytes]) -> None:
    with ls.ServerPool(deterministic_model, replicas=2, ctx_size=4096, alias="det") as pool:
        with pool.session() as other_session, pool.session() as session:
            assert isinstance(session, ls.Server) and session is not other_session
            victim = session
            stream = session.openai(max_retries=0, timeout=60).completions.create(
                model="det", prompt="Hello", max_tokens=3000, stream=True, extra_body={"ignore_eos": True})
            detected = kill_after_two_chunks(stream, victim.pid)
            assert detected < 10
            assert_serving(other_session, pieces)  # the other replica is untouched
        victim.proc.wait(10)
        started = time.monotonic()
        with pool.session() as s1, pool.session() as s2:  # handing out a session restarts the dead replica
            assert pool.restarts == 1 and victim not in pool.servers
            assert all(server.running for server in pool.servers)
            for s in (s1, s2):
                assert isinstance(s, ls.Server)
                assert_serving(s, pieces)
        figure("pool_replica_killed_mid_stream", {"client_error_after_s": round(detected, 3),
                                                  "restart_and_serve_s": round(time.monotonic() - started, 2)})


# ------------------------------------------------------------------------------------- Hub download faults


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub()
    fake.repos["acme/big-GGUF"] = {"big-Q8_0.gguf": os.urandom(3 * MB)}
    fake.repos["acme/split-GGUF"] = {"s-Q8_0-00001-of-00002.gguf": os.urandom(600 << 10),
                                     "s-Q8_0-00002-of-00002.gguf": os.urandom(600 << 10)}
    yield fake
    fake.close()


@contextlib.contextmanager
def small_filesystem(path: Path, *options: str) -> Iterator[Path]:
    """A 1 MiB tmpfs at ``path`` (root only), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(["size=1m", *options]), "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only_directory(path: Path) -> Iterator[Path]:
    """Root ignores permission bits, so for root this is a read-only mount; otherwise mode 0555."""
    if os.geteuid() == 0:
        with small_filesystem(path, "ro") as mounted:
            yield mounted
        return
    path.mkdir(parents=True)
    path.chmod(0o555)
    try:
        yield path
    finally:
        path.chmod(0o755)


def resolve_in_child(hub: FakeHub, cache: Path, home: Path, call: str) -> dict[str, Any]:
    """Run a resolver call in a fresh interpreter (huggingface_hub reads HF_* at import); what it raised."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LLAMA_ARG_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="0",
               HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    script = ("import json, llama_serve.hub as h\ntry:\n    r = " + call + "\n    out = {'model': str(r.model)}\n"
              "except Exception as e:\n    out = {'type': type(e).__name__, 'error': str(e)}\nprint(json.dumps(out))")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    result["seconds"] = time.monotonic() - started
    result["stderr"] = done.stderr
    return result


def assert_no_truncated_file(cache: Path, hub: FakeHub) -> None:
    """Whatever huggingface_hub left behind, nothing under snapshots/ (and no finished blob) is short."""
    sizes = {name: len(content) for files in hub.repos.values() for name, content in files.items()}
    blob_sizes = set(sizes.values())
    for entry in cache.rglob("*"):
        if "snapshots" in entry.parts and (entry.is_file() or entry.is_symlink()):
            assert entry.exists(), f"dangling {entry}"
            assert entry.stat().st_size == sizes[entry.name], f"truncated {entry}"
        elif entry.parent.name == "blobs" and entry.is_file() and not entry.name.endswith(".incomplete"):
            assert entry.stat().st_size in blob_sizes, f"truncated blob {entry}"


def assert_refused_cleanly(result: dict[str, Any], cache: Path, hub: FakeHub, *phrases: str) -> None:
    """The child got a ModelReferenceError naming ``phrases``, quickly and without a traceback, and the cache
    holds no truncated file."""
    assert result.get("type") == "ModelReferenceError", result
    assert all(phrase in result["error"] for phrase in phrases), result
    assert "Traceback" not in result["stderr"] and result["seconds"] < 60
    assert_no_truncated_file(cache, hub)


@pytest.mark.timeout(120)
def test_download_into_a_read_only_cache(hub: FakeHub, tmp_path: Path) -> None:
    with read_only_directory(tmp_path / "ro") as cache:
        result = resolve_in_child(hub, cache, tmp_path / "home", "h.resolve('hf:acme/big-GGUF/main/big-Q8_0.gguf')")
        assert_refused_cleanly(result, cache, hub, "cannot write to the Hugging Face cache", str(cache))
    figure("hub_read_only_cache", {"error": result["error"], "seconds": round(result["seconds"], 2)})


@pytest.mark.timeout(120)
def test_download_into_a_full_disk(hub: FakeHub, tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "full") as cache:
        result = resolve_in_child(hub, cache, tmp_path / "home", "h.resolve('hf:acme/big-GGUF/main/big-Q8_0.gguf')")
        assert_refused_cleanly(result, cache, hub, os.strerror(errno.ENOSPC), str(cache))
        assert not list(cache.rglob("snapshots/*/big-Q8_0.gguf"))
        # The command line says the same and exits 2, before any server starts.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LLAMA_ARG_"))}
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "home"), HF_HUB_CACHE=str(cache),
                   HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
        cli = subprocess.run([sys.executable, "-m", "llama_serve", "-m", "hf:acme/big-GGUF/main/big-Q8_0.gguf"],
                             env=env, capture_output=True, text=True, timeout=120)
        assert cli.returncode == 2 and "cannot write to the Hugging Face cache" in cli.stderr, cli.stderr
        assert "Traceback" not in cli.stderr
    figure("hub_disk_full", {"error": result["error"], "seconds": round(result["seconds"], 2)})


@pytest.mark.timeout(120)
def test_disk_fills_on_the_second_shard(hub: FakeHub, tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "full") as cache:
        result = resolve_in_child(hub, cache, tmp_path / "home", "h.resolve_repo('acme/split-GGUF:Q8_0')")
        assert_refused_cleanly(result, cache, hub, "s-Q8_0-00002-of-00002.gguf", os.strerror(errno.ENOSPC))
        assert not list(cache.rglob("snapshots/*/s-Q8_0-00002-of-00002.gguf"))


@pytest.mark.timeout(120)
def test_a_read_only_cache_that_holds_the_model_still_serves_it(hub: FakeHub, tmp_path: Path) -> None:
    """A shared cache mounted read-only (containers, clusters): what is already there resolves without writing."""
    hub.repos["acme/small-GGUF"] = {"small-Q8_0.gguf": os.urandom(300 << 10)}
    reference = "h.resolve('hf:acme/small-GGUF/main/small-Q8_0.gguf')"
    with small_filesystem(tmp_path / "shared") as cache:
        first = resolve_in_child(hub, cache, tmp_path / "home", reference)
        assert "model" in first, first
        subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
        again = resolve_in_child(hub, cache, tmp_path / "home", reference)
        assert again.get("model") == first["model"], again
        assert Path(first["model"]).read_bytes() == hub.repos["acme/small-GGUF"]["small-Q8_0.gguf"]
