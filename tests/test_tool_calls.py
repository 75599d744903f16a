"""Tool calls and JSON-schema output through the real server and the official openai client.

The models are random (generated), so what they say is noise; what is tested is what the server guarantees:
with ``tool_choice="required"`` the reply *is* a tool call (our patch 0002 removes the free text upstream
lets precede it, and makes ``parallel_tool_calls=false`` mean one call), returned as OpenAI ``tool_calls``
whose arguments validate against the tool's schema, for three template families, streaming and not. Each
family runs on a vocabulary of its own kind, so the template's markers are that vocabulary's tokens. The
only steering is a bias towards end-of-generation, which the grammar masks until the call is complete: it
makes the model stop right after the call instead of spending its budget on whitespace.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import jsonschema
import pytest

import llama_serve as ls
from toolcases import ASK, SCHEMAS, TOOLS, WEATHER, template_server

NATIVE = ["hermes-3", "qwen-2.5", "llama-3.1", "llama-3.2", "mistral-nemo"]  # families with their own tool syntax


@pytest.fixture(scope="module", params=NATIVE)
def family(request: pytest.FixtureRequest) -> Iterator[tuple[str, ls.Server, dict[str, float]]]:
    with template_server(request.param, "--jinja") as (srv, stop_bias):
        yield request.param, srv, stop_bias


def check_call(name: str, arguments: str) -> None:
    assert name in SCHEMAS, name
    jsonschema.validate(json.loads(arguments), SCHEMAS[name])


def test_required_tool_choice_returns_a_valid_tool_call(family: tuple[str, ls.Server, dict[str, float]]) -> None:
    _, srv, stop_bias = family
    reply = srv.openai(max_retries=0).chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
        max_tokens=200, temperature=0, logit_bias=stop_bias)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.content  # the reply is the call, nothing before it
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].type == "function" and calls[0].id
    check_call(calls[0].function.name, calls[0].function.arguments)


def test_required_tool_choice_streams_a_valid_tool_call(family: tuple[str, ls.Server, dict[str, float]]) -> None:
    _, srv, stop_bias = family
    stream = srv.openai(max_retries=0).chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
        max_tokens=200, temperature=0, logit_bias=stop_bias, stream=True)
    calls: dict[int, dict[str, str]] = {}
    content, finish = "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for part in delta.tool_calls or []:
            call = calls.setdefault(part.index, {"name": "", "arguments": ""})
            if part.function is not None:
                call["name"] += part.function.name or ""
                call["arguments"] += part.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and not content.strip()
    assert len(calls) == 1
    check_call(calls[0]["name"], calls[0]["arguments"])


def test_parallel_calls_are_each_valid(family: tuple[str, ls.Server, dict[str, float]]) -> None:
    _, srv, stop_bias = family
    reply = srv.openai(max_retries=0).chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=True,
        max_tokens=300, temperature=0, logit_bias=stop_bias)
    calls = reply.choices[0].message.tool_calls or []
    finish = reply.choices[0].finish_reason
    assert calls and finish in ("tool_calls", "length")
    # A random model may go on calling until max_tokens: then, as with OpenAI, the last call may be cut short.
    for call in calls if finish == "tool_calls" else calls[:-1]:
        check_call(call.function.name, call.function.arguments)


def test_json_schema_response_format_is_always_valid_json(family: tuple[str, ls.Server, dict[str, float]]) -> None:
    _, srv, stop_bias = family
    client = srv.openai(max_retries=0)
    for seed in range(3):
        reply = client.chat.completions.create(
            model="m", messages=ASK, max_tokens=200, temperature=1.0, seed=seed, logit_bias=stop_bias,
            response_format={"type": "json_schema", "json_schema": {"name": "forecast", "schema": WEATHER}})
        assert reply.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(reply.choices[0].message.content or ""), WEATHER)


def test_a_bad_tool_definition_is_an_http_400(family: tuple[str, ls.Server, dict[str, float]]) -> None:
    import openai

    _, srv, _ = family
    with pytest.raises(openai.BadRequestError):
        srv.openai(max_retries=0).chat.completions.create(
            model="m", messages=ASK, tools=[{"type": "function", "function": {"parameters": WEATHER}}],  # no name
            tool_choice="required", max_tokens=20)
    assert srv.health() == 200
