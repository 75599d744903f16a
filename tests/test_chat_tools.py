"""``ls.Chat`` tools and structured output on the real server: a random model with a real Qwen vocabulary and
Qwen 2.5's own chat template. What the model says is noise; what is tested is what Chat and the server
guarantee: forced calls are made, arguments are validated before a function runs, failures are fed back, the
loop is bounded, and ``output=`` comes back as a validated object. The only steering is a bias towards
end-of-generation, which the grammar masks until a call (or a JSON answer) is complete.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import pydantic
import pytest
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

import llama_serve as ls
from llama_serve.chat import ToolCall
from toolcases import template_server


@pytest.fixture(scope="module")
def qwen() -> Iterator[tuple[ls.Server, dict[str, float]]]:
    with template_server("qwen-2.5", ctx_size=8192) as server:
        yield server


class Calls:
    """Tools that record how they were called."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def get_weather(self, city: Literal["Paris", "Oslo"], days: int = 1) -> str:
        """Forecast for a city.

        Args:
            city: The city.
            days: How many days ahead.
        """
        assert isinstance(days, int)
        self.seen.append(("get_weather", {"city": city, "days": days}))
        return f"{city}: sunny for {days} days"

    def get_time(self, zone: Literal["UTC", "CET"]) -> dict[str, str]:
        """The time in a zone."""
        self.seen.append(("get_time", {"zone": zone}))
        return {"zone": zone, "time": "12:00"}


def steady(stop_bias: dict[str, float]) -> dict[str, Any]:
    """Greedy, one call per reply, and room for the whitespace a random model puts between JSON tokens."""
    return {"temperature": 0, "max_tokens": 300, "logit_bias": stop_bias, "parallel_tool_calls": False}


def chat_on(qwen: tuple[ls.Server, dict[str, float]], calls: Calls, **options: Any) -> ls.Chat:
    srv, stop_bias = qwen
    return ls.Chat(server=srv, tools=[calls.get_weather, calls.get_time], **{**steady(stop_bias), **options})


class City(pydantic.BaseModel):
    name: Literal["Paris", "Oslo", "Lima"]
    population: int = pydantic.Field(ge=0, le=99_999_999)


def test_required_runs_a_tool_then_answers(qwen: tuple[ls.Server, dict[str, float]]) -> None:
    calls = Calls()
    chat = chat_on(qwen, calls)
    answer = chat.send("Weather in Paris?", tool_choice="required")
    assert isinstance(answer, str)
    assert calls.seen and calls.seen[0][0] in ("get_weather", "get_time")
    roles = [t.role for t in chat.turns]
    assert roles[:3] == ["user", "assistant", "tool"] and roles[-1] == "assistant"
    call = chat.turns[1].tool_calls[0]
    assert call.arguments is not None and chat.turns[2].tool_result is not None
    assert chat.turns[2].tool_result.call_id == call.id and not chat.turns[2].tool_result.error


def test_a_named_tool_is_the_one_called(qwen: tuple[ls.Server, dict[str, float]]) -> None:
    for name in ("get_time", "get_weather"):
        calls = Calls()
        chat_on(qwen, calls, max_rounds=1).send("Call it", tool_choice=name)
        assert calls.seen[0][0] == name


def test_tool_choice_none_and_unknown_names(qwen: tuple[ls.Server, dict[str, float]]) -> None:
    calls = Calls()
    chat = chat_on(qwen, calls)
    chat.send("No tools please", tool_choice="none")
    assert not calls.seen and not chat.last_turn.tool_calls  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="not a tool of this chat"):
        chat.send("x", tool_choice="get_stock_price")
    with pytest.raises(ValueError, match="needs tools"):
        ls.Chat(server=qwen[0]).send("x", tool_choice="required")


def test_failures_are_fed_back_or_raised(qwen: tuple[ls.Server, dict[str, float]]) -> None:
    def broken(city: Literal["Paris", "Oslo"]) -> str:
        """Always fails."""
        raise RuntimeError(f"no data for {city}")

    srv, stop_bias = qwen
    chat = ls.Chat(server=srv, tools=[broken], **steady(stop_bias), max_rounds=1)
    chat.send("Go", tool_choice="required")
    result = chat.turns[2].tool_result
    assert result is not None and result.error and "RuntimeError: no data for" in result.content

    strict = ls.Chat(server=srv, tools=[broken], **steady(stop_bias),
                     tool_errors="raise")
    with pytest.raises(ls.chat.ToolError, match="no data for") as info:
        strict.send("Go", tool_choice="required")
    assert isinstance(info.value.__cause__, RuntimeError)
    assert [t.role for t in strict.turns] == ["user", "assistant", "tool"]  # the call is answered: history valid
    assert strict.turns[2].tool_result is not None and strict.turns[2].tool_result.error


def test_the_loop_is_bounded(qwen: tuple[ls.Server, dict[str, float]]) -> None:
    calls = Calls()
    chat = chat_on(qwen, calls, max_rounds=0)
    with pytest.raises(ls.chat.ToolLoopError, match="after 0 rounds"):
        chat.send("Loop", tool_choice="required")
    assert not calls.seen
    assert [t.role for t in chat.turns][:3] == ["user", "assistant", "tool"]
    assert "limit of 0 tool rounds" in chat.turns[2].content


def test_calls_can_be_denied(qwen: tuple[ls.Server, dict[str, float]]) -> None:
    calls = Calls()
    asked: list[ToolCall] = []
    chat = chat_on(qwen, calls, max_rounds=1, on_tool_call=lambda call: asked.append(call) or False)
    chat.send("Go", tool_choice="required")
    assert asked and not calls.seen
    assert "did not allow" in chat.turns[2].content


def test_stream_events_show_the_tool_round(qwen: tuple[ls.Server, dict[str, float]]) -> None:
    calls = Calls()
    events = list(chat_on(qwen, calls, max_rounds=1).stream("Go", tool_choice="required", events=True))
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("ToolCallStarted") < kinds.index("ToolCallFinished") < len(kinds) - 1
    assert kinds[-1] == "TurnDone" and kinds.count("TurnDone") == 2


def test_async_tools_run_on_the_callers_loop(qwen: tuple[ls.Server, dict[str, float]]) -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def lookup(city: Literal["Paris", "Oslo"]) -> str:
        """Look a city up."""
        loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return city.upper()

    srv, stop_bias = qwen
    chat = ls.Chat(server=srv, tools=[lookup], **steady(stop_bias), max_rounds=1)

    async def main() -> asyncio.AbstractEventLoop:
        await chat.send_async("Go", tool_choice="required")
        return asyncio.get_running_loop()

    assert loops == [asyncio.run(main())]
    chat.send("Again", tool_choice="required")  # from sync code: on a loop of its own
    assert len(loops) == 2 and not chat.turns[-2].tool_result.error  # type: ignore[union-attr]


def test_structured_output_types(qwen: tuple[ls.Server, dict[str, float]]) -> None:
    srv, stop_bias = qwen
    chat = ls.Chat(server=srv, temperature=0, max_tokens=200, logit_bias=stop_bias)
    city = chat.send("Name a big city", output=City)
    assert isinstance(city, City)

    class Point(TypedDict):
        x: int
        label: Literal["a", "b"]

    point = chat.send("A point", output=Point)
    assert isinstance(point, dict) and isinstance(point["x"], int) and point["label"] in ("a", "b")

    @dataclasses.dataclass
    class Flag:
        on: bool

    assert isinstance(chat.send("A flag", output=Flag), Flag)
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["n"], "additionalProperties": False}
    value = chat.send("A digit", output=schema)
    assert set(value) == {"n"} and 0 <= value["n"] <= 9


def test_an_inexpressible_schema_fails_before_any_request(qwen: tuple[ls.Server, dict[str, float]]) -> None:
    chat = ls.Chat(server=qwen[0])
    with pytest.raises(ValueError, match="cannot be turned into a grammar"):
        chat.send("x", output={"$ref": "#/$defs/missing"})
    with pytest.raises(TypeError, match="cannot be described"):
        chat.send("x", output=threading.Lock)
    assert chat.turns == ()


def test_tools_then_a_structured_answer(qwen: tuple[ls.Server, dict[str, float]]) -> None:
    calls = Calls()
    chat = chat_on(qwen, calls, max_tokens=200)
    city = chat.send("Which of them is warmer?", output=City, tool_choice="required")
    assert isinstance(city, City) and calls.seen
    roles = [t.role for t in chat.turns]
    assert roles[-1] == "assistant" and roles[-2] == "tool"  # the text answer gave way to the structured one
    assert "assistant" not in {a for a, b in itertools.pairwise(roles) if a == b}


def test_bad_calls_from_the_model_are_fed_back(qwen: tuple[ls.Server, dict[str, float]]) -> None:
    calls = Calls()
    chat = chat_on(qwen, calls)
    unknown = chat._run_tool(ToolCall("1", "get_stock", "{}", {}), None)
    assert unknown.error and "no tool named 'get_stock'" in unknown.content
    not_json = chat._run_tool(ToolCall("2", "get_time", "{zone:", None), None)
    assert not_json.error and "not a JSON object" in not_json.content
    invalid = chat._run_tool(ToolCall("3", "get_weather", "", {"city": "Rome"}), None)
    assert invalid.error and "invalid arguments" in invalid.content and not calls.seen


def test_tool_timeout_and_parallel_calls(qwen: tuple[ls.Server, dict[str, float]]) -> None:
    gate = threading.Barrier(3, timeout=5)

    def together(n: int) -> int:
        """Returns once three calls run at the same time."""
        gate.wait()
        return n

    def slow() -> str:
        """Hangs."""
        time.sleep(3)
        return "late"

    chat = ls.Chat(server=qwen[0], max_parallel_tools=3)
    chat.register_tool(together)
    chat.register_tool(slow, timeout=0.3)
    start = time.monotonic()
    result = chat._run_tool(ToolCall("s", "slow", "{}", {}), None)
    assert result.error and "timed out after 0.3 s" in result.content and time.monotonic() - start < 2
    list(chat._run_tools([ToolCall(str(i), "together", f'{{"n": {i}}}', {"n": i}) for i in range(3)], None))
    assert [t.content for t in chat.turns] == ["0", "1", "2"]
