"""tool_choice honoured on every template family and every route (patch 0006; 0002 for "required").

Table-driven over the pinned tree's own chat templates, each on a random-weight model with a vocabulary of its
family (or one whose text spells the template's markers). For each: a named choice calls exactly that tool with
arguments valid for its schema; "required" gives at least one valid call; parallel_tool_calls=false exactly
one; "none" no call; an unknown name is a 400 naming it; streaming and not agree. Then the same through the
Responses and Anthropic Messages routes with the official SDKs. As in test_tool_calls.py, the only steering is
a bias towards end-of-generation, which the grammar masks until a call is complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest

import llama_serve as ls
from toolcases import ASK, FAMILIES, SCHEMAS, TOOLS, template_server

# A forced call bounds the reasoning before it (256 tokens unless the request sets reasoning_budget_tokens;
# DeepSeek-R1-distill runs with <think> as one token, as in its real vocabulary). gpt-oss is left open: with its
# harmony markers as single tokens too, a random model under a forced choice still reaches max_tokens first.
UNFORCED = {"gpt-oss"}


def forced(name: str) -> None:
    if name in UNFORCED:
        pytest.xfail("gpt-oss: a forced call does not come before max_tokens with a random model (open)")


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request: pytest.FixtureRequest) -> Iterator[tuple[str, ls.Server, dict[str, float]]]:
    with template_server(request.param) as (srv, stop_bias):
        yield request.param, srv, stop_bias


def ask(srv: ls.Server, stop_bias: dict[str, float], stream: bool = False, **kwargs: Any) -> tuple[str, list[Any], str]:
    """(content, [(name, arguments)], finish_reason) of one chat completion, streamed or not."""
    body: dict[str, Any] = {"model": "m", "messages": ASK, "tools": TOOLS, "max_tokens": 600, "temperature": 0,
                            "logit_bias": stop_bias, **kwargs}
    client = srv.openai(max_retries=0)
    if not stream:
        choice = client.chat.completions.create(**body).choices[0]
        calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
        return choice.message.content or "", calls, str(choice.finish_reason)
    content, parts, finish = "", {}, ""
    for chunk in client.chat.completions.create(stream=True, **body):
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for part in choice.delta.tool_calls or []:
                entry = parts.setdefault(part.index, ["", ""])
                if part.function is not None:
                    entry[0] += part.function.name or ""
                    entry[1] += part.function.arguments or ""
            finish = choice.finish_reason or finish
    return content, [tuple(p) for _, p in sorted(parts.items())], finish


def valid(calls: list[Any]) -> bool:
    for name, arguments in calls:
        jsonschema.validate(json.loads(arguments), SCHEMAS[name])
    return True


@pytest.mark.parametrize("name", ["get_time", "get_weather"])
def test_named_choice_calls_exactly_that_tool(family: tuple[str, ls.Server, dict[str, float]], name: str) -> None:
    forced(family[0])
    _, srv, bias = family
    choice = {"type": "function", "function": {"name": name}}
    content, calls, finish = ask(srv, bias, tool_choice=choice)
    assert finish == "tool_calls" and not content.strip()
    assert [c[0] for c in calls] == [name] and valid(calls)
    assert ask(srv, bias, stream=True, tool_choice=choice) == (content, calls, finish)


def test_required_gives_valid_calls_and_parallel_false_one(family: tuple[str, ls.Server, dict[str, float]]) -> None:
    forced(family[0])
    _, srv, bias = family
    content, calls, finish = ask(srv, bias, tool_choice="required")
    assert calls and finish in ("tool_calls", "length") and not content.strip()
    # A random model may go on calling until max_tokens: then, as with OpenAI, the last call may be cut short.
    assert valid(calls if finish == "tool_calls" else calls[:-1])
    single = ask(srv, bias, tool_choice="required", parallel_tool_calls=False)
    assert len(single[1]) == 1 and valid(single[1])
    assert ask(srv, bias, stream=True, tool_choice="required", parallel_tool_calls=False) == single


def test_none_gives_text(family: tuple[str, ls.Server, dict[str, float]]) -> None:
    name, srv, _ = family
    if name == "gpt-oss":
        pytest.xfail("unconstrained, a random model does not write the harmony format the gpt-oss parser needs "
                     "(HTTP 500 'does not match the expected format'); a real gpt-oss model does")
    _, calls, finish = ask(srv, {}, tool_choice="none", max_tokens=20)
    assert not calls and finish in ("stop", "length")


def test_bad_choices_are_a_400_naming_the_problem(family: tuple[str, ls.Server, dict[str, float]]) -> None:
    _, srv, bias = family
    with pytest.raises(openai.BadRequestError, match="'get_stock', which is not among the tools"):
        ask(srv, bias, tool_choice={"type": "function", "function": {"name": "get_stock"}})
    with pytest.raises(openai.BadRequestError, match="needs the function's name"):
        ask(srv, bias, tool_choice={"type": "function"})
    with pytest.raises(openai.BadRequestError, match="has no tools"):
        srv.openai(max_retries=0).chat.completions.create(
            model="m", messages=ASK, tool_choice={"type": "function", "function": {"name": "get_time"}})  # type: ignore[arg-type]
    assert srv.health() == 200


def test_a_call_round_trips_into_the_next_request(family: tuple[str, ls.Server, dict[str, float]]) -> None:
    forced(family[0])
    _, srv, bias = family
    _, calls, _ = ask(srv, bias, tool_choice={"type": "function", "function": {"name": "get_time"}})
    call_id = "call12345"  # Mistral's template wants ids of 9 letters and digits
    history = [*ASK, {"role": "assistant", "content": "", "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": calls[0][0], "arguments": calls[0][1]}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "12:00 UTC"}]
    reply = srv.openai(max_retries=0).chat.completions.create(
        model="m", messages=history, tools=TOOLS, tool_choice="none", max_tokens=5)  # type: ignore[arg-type]
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_prefill_with_a_forced_call_says_why(family: tuple[str, ls.Server, dict[str, float]]) -> None:
    _, srv, _ = family
    with pytest.raises(openai.BadRequestError, match="cannot be combined with tool_choice"):
        srv.openai(max_retries=0).chat.completions.create(
            model="m", messages=[*ASK, {"role": "assistant", "content": "Let me"}], tools=TOOLS,  # type: ignore[list-item]
            tool_choice="required", max_tokens=20)
