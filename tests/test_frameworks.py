"""The frameworks people use, pointed at a server started by ``ls.Server`` (recipes of docs/chat.md): chatlas,
LangChain and pydantic-ai — each with a plain reply, a streamed reply, a tool call and a structured result —
and the official ``openai`` (Responses API) and ``anthropic`` SDKs for tool choice on their routes.

Plain and streamed replies come from the deterministic model; tools and structured results from a random
model with Qwen 2.5's template, whose server biases every request towards end-of-generation (``--logit-bias``)
so that a grammar-held call or JSON answer ends as soon as it is complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import jsonschema
import pydantic
import pytest

import llama_serve as ls
from llama_serve import testmodels
from toolcases import FAMILIES, TIME, template_server

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
           "required": ["city"], "additionalProperties": False}


class City(pydantic.BaseModel):
    name: Literal["Paris", "Oslo", "Lima"]
    population: int = pydantic.Field(ge=0, le=99_999_999)


def get_time(zone: Literal["UTC", "CET"]) -> str:
    """The time in a zone.

    Args:
        zone: The time zone.
    """
    return f"12:00 {zone}"


def clock(utc: bool) -> str:
    """The time, in UTC or local (plain types: chatlas cannot resolve postponed annotations such as Literal)."""
    return "12:00" if utc else "13:00"


@pytest.fixture(scope="module")
def plain(deterministic_model: Path) -> Iterator[ls.Server]:
    with ls.Server(deterministic_model, ctx_size=2048) as srv:
        yield srv


@pytest.fixture(scope="module")
def tools() -> Iterator[ls.Server]:
    eos = ls.Model(testmodels.tiny_random(vocab=FAMILIES["qwen-2.5"][1]), vocab_only=True).eos
    with template_server("qwen-2.5", "--logit-bias", f"{eos}+100", "-n", "300", ctx_size=8192) as (srv, _):
        yield srv


def test_langchain(plain: ls.Server, tools: ls.Server) -> None:
    from langchain_core.messages import AIMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=plain.base_url + "/v1", api_key="none", model="m", temperature=0, max_tokens=8)
    text = llm.invoke("Hello").content
    assert isinstance(text, str) and text
    assert "".join(str(c.content) for c in llm.stream("Hello")) == text

    llm = ChatOpenAI(base_url=tools.base_url + "/v1", api_key="none", model="m", temperature=0, max_tokens=300)
    call = llm.bind_tools([get_time], tool_choice="required").invoke("What time is it?")
    assert isinstance(call, AIMessage) and call.tool_calls[0]["name"] == "get_time"
    jsonschema.validate(call.tool_calls[0]["args"], TIME)
    # method="function_calling" forces the schema's tool by name (the object-form tool_choice; patch 0006)
    city = llm.with_structured_output(City, method="function_calling").invoke("Name a city")
    assert isinstance(city, City)
    assert isinstance(llm.with_structured_output(City).invoke("Name a city"), City)  # json_schema


def test_chatlas(plain: ls.Server, tools: ls.Server) -> None:
    import chatlas

    chat = chatlas.ChatOpenAICompletions(base_url=plain.base_url + "/v1", api_key="none", model="m",
                                         kwargs={"max_retries": 0})
    text = str(chat.chat("Hello", echo="none", kwargs={"max_tokens": 8, "temperature": 0}))
    assert text
    streamed = "".join(str(p) for p in chat.stream("Hello", kwargs={"max_tokens": 8, "temperature": 0}))
    assert streamed

    chat = chatlas.ChatOpenAICompletions(base_url=tools.base_url + "/v1", api_key="none", model="m")
    controller = chatlas.StreamController()
    chat.register_tool(clock)
    chat.on_tool_result(lambda _: controller.cancel())  # "required" would call tools forever: stop after one round
    for _ in chat.stream("What time is it?", controller=controller, kwargs={"tool_choice": "required"}):
        pass
    requests = [c for turn in chat.get_turns() for c in turn.contents if type(c).__name__ == "ContentToolRequest"]
    assert requests and requests[0].name == "clock" and isinstance(requests[0].arguments["utc"], bool)
    chat = chatlas.ChatOpenAICompletions(base_url=tools.base_url + "/v1", api_key="none", model="m")
    city = chat.chat_structured("Name a city", data_model=City)
    assert isinstance(city, City)


def test_pydantic_ai(plain: ls.Server, tools: ls.Server) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    def model(srv: ls.Server) -> OpenAIChatModel:
        return OpenAIChatModel("m", provider=OpenAIProvider(base_url=srv.base_url + "/v1", api_key="none"))

    agent = Agent(model(plain), model_settings={"max_tokens": 8, "temperature": 0})
    text = agent.run_sync("Hello").output
    assert isinstance(text, str) and text

    async def streamed() -> str:
        async with agent.run_stream("Hello") as run:
            return "".join([piece async for piece in run.stream_text(delta=True)])

    import asyncio

    assert asyncio.run(streamed()) == text

    # Structured output as pydantic-ai does it by default: a final_result tool, called under tool_choice=required
    calls: list[str] = []

    def lookup(city: Literal["Paris", "Oslo"]) -> str:
        """Facts about a city."""
        calls.append(city)
        return f"{city}: 2 million people"

    structured = Agent(model(tools), output_type=City, tools=[lookup], model_settings={"temperature": 0})
    result = structured.run_sync("Look up a city, then name it")
    assert isinstance(result.output, City)
    names = [part.tool_name for message in result.all_messages() for part in getattr(message, "parts", [])
             if type(part).__name__ == "ToolCallPart"]
    assert "final_result" in names


def test_openai_responses_route(tools: ls.Server) -> None:
    client = tools.openai(max_retries=0)
    response = client.responses.create(
        model="m", input="What time is it?", max_output_tokens=300,
        tools=[{"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": True},
               {"type": "function", "name": "get_time", "parameters": TIME, "strict": True}],
        tool_choice={"type": "function", "name": "get_time"})
    calls = [item for item in response.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["get_time"]
    jsonschema.validate(json.loads(calls[0].arguments), TIME)
    import openai

    with pytest.raises(openai.BadRequestError, match="not among the tools"):
        client.responses.create(model="m", input="x", tools=[{"type": "function", "name": "get_time",
                                                              "parameters": TIME}],
                                tool_choice={"type": "function", "name": "nope"})


def test_anthropic_messages_route(tools: ls.Server) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=tools.base_url, api_key="none", max_retries=0)
    defs: list[Any] = [{"name": "get_weather", "description": "Forecast", "input_schema": WEATHER},
                       {"name": "get_time", "description": "Clock", "input_schema": TIME}]
    ask: list[Any] = [{"role": "user", "content": "What time is it in Paris?"}]

    def uses(tool_choice: Any) -> list[Any]:
        reply = client.messages.create(model="m", max_tokens=300, tools=defs, messages=ask, tool_choice=tool_choice)
        return [block for block in reply.content if block.type == "tool_use"]

    for _ in range(4):  # upstream lost the named tool 1 try in 4
        named = uses({"type": "tool", "name": "get_time"})
        assert [b.name for b in named] == ["get_time"]
        jsonschema.validate(named[0].input, TIME)
    assert uses({"type": "any", "disable_parallel_tool_use": True}).__len__() == 1
    assert uses({"type": "none"}) == []
    with pytest.raises(anthropic.BadRequestError) as info:
        uses({"type": "tool", "name": "get_stock"})
    assert info.value.body["type"] == "error" and "get_stock" in info.value.body["error"]["message"]  # type: ignore[index]

    call = named[0]
    follow = [*ask, {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name,
                                                        "input": call.input}]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "12:00"}]}]
    reply = client.messages.create(model="m", max_tokens=5, tools=defs, messages=follow, tool_choice={"type": "none"})
    assert reply.stop_reason in ("end_turn", "max_tokens")
