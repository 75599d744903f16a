"""``Chat``: a conversation with a llama.cpp server — turns, streaming, Python tools in a loop, structured output.

A chat talks to its server only through the OpenAI-compatible HTTP API, so it works the same on a server it
spawned (and owns: stopped with the chat), a ``Server``/``Endpoint`` it was given, or a remote one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypedDict

import openai
import pydantic
from typing_extensions import Unpack

from .._native import core
from ..server import Endpoint, Server, ServerError
from .output import Output
from .tools import Tool, result_text
from .turns import ToolCall, ToolResult, Turn, Usage, parse_arguments, tool_turn

if TYPE_CHECKING:
    from typing_extensions import Self

FILE_FORMAT = "llama-serve-chat"
FILE_VERSION = 1
ToolChoice = str  # "auto", "required", "none", or the name of one of the chat's tools


class Sampling(TypedDict, total=False):
    """Sampling settings: defaults for a chat, overridable per ``send``/``stream``."""

    temperature: float
    top_p: float
    top_k: int
    min_p: float
    seed: int
    max_tokens: int
    stop: str | list[str]
    presence_penalty: float
    frequency_penalty: float
    repeat_penalty: float
    logit_bias: dict[str, float]


SAMPLING_KEYS = frozenset(Sampling.__annotations__)
OPENAI_SAMPLING = frozenset({"temperature", "top_p", "seed", "max_tokens", "stop", "presence_penalty",
                             "frequency_penalty", "logit_bias"})  # the rest go in the body as llama.cpp's


class ToolLoopError(RuntimeError):
    """The model kept calling tools past ``max_rounds``; the turns so far are kept."""


class ToolError(RuntimeError):
    """A tool failed and the chat was told to raise (``tool_errors="raise"``); the cause is chained."""

    def __init__(self, message: str, call: ToolCall) -> None:
        super().__init__(message)
        self.call = call


class ChatFileError(ValueError):
    """A saved chat that cannot be read: corrupt, or written by a newer version."""


# -- streaming events ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class ToolCallStarted:
    call: ToolCall


@dataclass(frozen=True)
class ToolCallFinished:
    call: ToolCall
    result: ToolResult


@dataclass(frozen=True)
class TurnDone:
    """An assistant turn is complete (one per model reply; several in a tool loop)."""

    turn: Turn


Event = TextDelta | ReasoningDelta | ToolCallStarted | ToolCallFinished | TurnDone


class Chat:
    """A conversation with a llama.cpp server.

    Give exactly one of: a model reference (a path or ``hf:`` ref: a server is spawned and owned by the chat,
    with ``server_options`` passed to :class:`~llama_serve.Server`), ``base_url`` (a running server), or
    ``server`` (a ``Server``/``Endpoint`` shared with others, never stopped by the chat). With ``base_url`` or
    ``server``, ``model`` names the model to ask for (a router's model id). Keywords that are sampling
    settings (:class:`Sampling`) are the chat's defaults, overridable per ``send``/``stream``.
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, *, base_url: str | None = None,
                 api_key: str | None = None, server: Endpoint | None = None, system_prompt: str | None = None,
                 tools: Iterable[Callable[..., Any] | Tool] = (), max_rounds: int = 8, max_parallel_tools: int = 4,
                 tool_errors: Literal["return", "raise"] = "return", parallel_tool_calls: bool | None = None,
                 on_tool_call: Callable[[ToolCall], bool] | None = None,
                 truncate: Literal["oldest"] | None = None, cache_prompt: bool = True,
                 temperature: float | None = None,
                 top_p: float | None = None, top_k: int | None = None, min_p: float | None = None,
                 seed: int | None = None, max_tokens: int | None = None, stop: str | list[str] | None = None,
                 **server_options: Any) -> None:
        self._turns: list[Turn] = []
        self._closed = True  # until a server is there
        more_sampling = {key: server_options.pop(key) for key in list(server_options) if key in SAMPLING_KEYS}
        if (base_url is not None) + (server is not None) > 1 or (model is None and base_url is None and
                                                                 server is None):
            raise ValueError("give exactly one of a model reference, base_url= or server=")
        if server_options and (base_url is not None or server is not None):
            raise ValueError(f"server options {sorted(server_options)} apply only to a server the chat spawns")
        if tool_errors not in ("return", "raise"):
            raise ValueError('tool_errors must be "return" or "raise"')
        if truncate not in (None, "oldest"):
            raise ValueError('truncate must be None or "oldest"')
        self._owned: Server | None = None
        if server is not None:
            self.endpoint: Endpoint = server
            self.model = str(model) if model is not None else None
        elif base_url is not None:
            self.endpoint = Endpoint(base_url, api_key)
            self.model = str(model) if model is not None else None
        else:
            self._owned = Server(model, **server_options)
            self.endpoint = self._owned
            self.model = None
        self.system_prompt = system_prompt
        self.max_rounds = max_rounds
        self.max_parallel_tools = max_parallel_tools
        self.parallel_tool_calls = parallel_tool_calls
        self.tool_errors = tool_errors
        self.on_tool_call = on_tool_call
        self.truncate = truncate
        self.cache_prompt = cache_prompt
        self.sampling: Sampling = _sampling(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                                            seed=seed, max_tokens=max_tokens, stop=stop, **more_sampling)
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register_tool(tool)
        self.dropped: list[Turn] = []  # turns that truncate="oldest" took out of the history
        self._client = self.endpoint.openai(max_retries=0)
        self._n_ctx: int | None = None
        self._closed = False
        self._busy = threading.Lock()  # one exchange at a time

    # -- lifetime ---------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the server if this chat spawned it; later sends raise ``ClosedError``."""
        self._closed = True
        self._client.close()
        if self._owned is not None:
            self._owned.stop()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def server(self) -> Endpoint:
        return self.endpoint

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._turns)} turns"
        return f"<llama_serve.Chat {self.endpoint.base_url} {state}>"

    # -- tools and turns ----------------------------------------------------------------------------------
    def register_tool(self, function: Callable[..., Any] | Tool, *, name: str | None = None,
                      description: str | None = None, timeout: float | None = None) -> Tool:
        tool = function if isinstance(function, Tool) else Tool.from_function(
            function, name=name, description=description, timeout=timeout)
        self._tools[tool.name] = tool
        return tool

    @property
    def tools(self) -> dict[str, Tool]:
        return dict(self._tools)

    @property
    def turns(self) -> tuple[Turn, ...]:
        return tuple(self._turns)

    @property
    def last_turn(self) -> Turn | None:
        return self._turns[-1] if self._turns else None

    def set_turns(self, turns: Iterable[Turn]) -> None:
        turns = list(turns)
        if not all(isinstance(t, Turn) for t in turns):
            raise TypeError("set_turns takes Turn objects")
        self._turns = turns

    def copy(self) -> Chat:
        """A fork of this conversation on the same server (the copy never owns it)."""
        other = Chat(server=self.endpoint, model=self.model, system_prompt=self.system_prompt,
                     tools=self._tools.values(), max_rounds=self.max_rounds,
                     max_parallel_tools=self.max_parallel_tools, tool_errors=self.tool_errors,
                     parallel_tool_calls=self.parallel_tool_calls,
                     on_tool_call=self.on_tool_call, truncate=self.truncate, cache_prompt=self.cache_prompt)
        other.sampling = Sampling(**self.sampling)
        other._turns = list(self._turns)
        return other

    def messages(self, turns: Sequence[Turn] | None = None) -> list[dict[str, Any]]:
        """The OpenAI messages the server is sent for ``turns`` (default: the whole history)."""
        out = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return out + [t.to_openai() for t in (self._turns if turns is None else turns)]

    def tokens(self) -> int:
        """The exact prompt size, in tokens, the server sees for the current history (with the tools)."""
        return self._count(self.messages(), list(self._tools.values()))

    # -- sending ----------------------------------------------------------------------------------------
    def send(self, text: str | None, *, output: Any = None, tool_choice: ToolChoice = "auto",
             **sampling: Unpack[Sampling]) -> Any:
        """Add a user turn (``None``: none, answer the history as it is), run the tool loop, return the
        answer: its text, or with ``output=`` (a pydantic model, TypedDict, dataclass or JSON-schema dict) the
        validated object."""
        result: Any = None
        with contextlib.closing(self._exchange(text, output, tool_choice, sampling, None)) as exchange:
            for event in exchange:
                if isinstance(event, _Result):
                    result = event.value
        return result

    def stream(self, text: str | None, *, tool_choice: ToolChoice = "auto", events: bool = False,
               **sampling: Unpack[Sampling]) -> Iterator[Any]:
        """Like :meth:`send`, yielding text deltas as they come (``events=True``: typed events). Leaving the
        loop early stops generation on the server and keeps the partial turn, marked interrupted."""
        with contextlib.closing(self._exchange(text, None, tool_choice, sampling, None)) as exchange:
            for event in exchange:
                if events and not isinstance(event, _Result):
                    yield event
                elif not events and isinstance(event, TextDelta):
                    yield event.text

    async def send_async(self, text: str | None, *, output: Any = None, tool_choice: ToolChoice = "auto",
                         **sampling: Unpack[Sampling]) -> Any:
        """:meth:`send` for asyncio; cancelling the task stops generation. ``async def`` tools run on this loop."""
        result: Any = None
        async for event in self._exchange_async(text, output, tool_choice, sampling):
            if isinstance(event, _Result):
                result = event.value
        return result

    async def stream_async(self, text: str | None, *, tool_choice: ToolChoice = "auto", events: bool = False,
                           **sampling: Unpack[Sampling]) -> AsyncIterator[Any]:
        """:meth:`stream` for asyncio."""
        async for event in self._exchange_async(text, None, tool_choice, sampling):
            if events and not isinstance(event, _Result):
                yield event
            elif not events and isinstance(event, TextDelta):
                yield event.text

    async def _exchange_async(self, text: str | None, output: Any, tool_choice: ToolChoice,
                              sampling: Sampling) -> AsyncIterator[Any]:
        """The synchronous exchange on a worker thread, its events handed over through a queue; cancelling
        (or leaving the loop) stops it between two chunks."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()

        def produce() -> None:
            gen = self._exchange(text, output, tool_choice, sampling, loop)
            try:
                for event in gen:
                    loop.call_soon_threadsafe(events.put_nowait, ("event", event))
                    if cancelled.is_set():
                        break
            except BaseException as e:
                loop.call_soon_threadsafe(events.put_nowait, ("error", e))
            finally:
                gen.close()
                loop.call_soon_threadsafe(events.put_nowait, ("end", None))

        worker = loop.run_in_executor(None, produce)
        try:
            while True:
                kind, value = await events.get()
                if kind == "end":
                    break
                if kind == "error":
                    raise value
                yield value
        finally:
            cancelled.set()
            await asyncio.shield(worker)

    # -- the exchange -----------------------------------------------------------------------------------
    def _exchange(self, text: str | None, output: Any, tool_choice: ToolChoice, sampling: Sampling,
                  loop: asyncio.AbstractEventLoop | None) -> Generator[Any, None, None]:
        """One user exchange as events: replies, tool rounds, and last a ``_Result``. Turns are added as they
        complete; on an error before any reply the history is left as it was."""
        if self._closed:
            raise core.ClosedError("the chat is closed")
        unknown = set(sampling) - SAMPLING_KEYS
        if unknown:
            raise TypeError(f"unknown sampling settings: {sorted(unknown)}")
        spec = Output.of(output) if output is not None else None  # an inexpressible schema fails here
        first_choice = self._tool_choice(tool_choice)
        settings = Sampling(**{**self.sampling, **sampling})
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("this chat is already answering (one send/stream at a time; use chat.copy() "
                               "for a conversation of its own)")
        start = len(self._turns)
        try:
            if text is not None:
                self._turns.append(Turn("user", text))
            yield from self._rounds(spec, first_choice, settings, loop)
        except BaseException:
            if not any(t.role == "assistant" for t in self._turns[start:]):
                del self._turns[start:]
            self._answer_open_calls(start, "not run: the exchange was interrupted")
            raise
        finally:
            self._busy.release()
            self._committed(start)

    def _rounds(self, spec: Output | None, tool_choice: Any, settings: Sampling,
                loop: asyncio.AbstractEventLoop | None) -> Generator[Any, None, None]:
        rounds = 0
        while True:
            tools = self._offered(tool_choice)
            reply = yield from self._reply(settings, tools=tools, tool_choice=tool_choice if tools else None,
                                           response_format=spec.response_format() if spec and not tools else None)
            if reply.tool_calls:
                if rounds == self.max_rounds:
                    self._answer_open_calls(0, f"not run: the limit of {self.max_rounds} tool rounds was reached")
                    raise ToolLoopError(f"the model still called tools after {self.max_rounds} rounds "
                                        f"(max_rounds={self.max_rounds}); the turns so far are kept")
                rounds += 1
                yield from self._run_tools(reply.tool_calls, loop)
                tool_choice = "auto"  # a forced choice holds for the first reply only
                continue
            if spec is None:
                yield _Result(reply.content)
                return
            if tools:  # a text answer after tools: asked for again in the output's shape
                self._turns.pop()
                tool_choice = "none"
                continue
            yield _Result(spec.parse(reply.content))
            return

    def _offered(self, tool_choice: Any) -> list[Tool]:
        if not self._tools or tool_choice == "none":
            return []
        if isinstance(tool_choice, dict):  # a named tool: offered alone, so "required" can only call it
            return [self._tools[tool_choice["function"]["name"]]]
        return list(self._tools.values())

    def _tool_choice(self, choice: ToolChoice) -> Any:
        if choice in ("auto", "required", "none"):
            if choice == "required" and not self._tools:
                raise ValueError('tool_choice="required" needs tools (register_tool, or tools= on the chat)')
            return choice
        if choice not in self._tools:
            raise ValueError(f"tool_choice {choice!r} is not a tool of this chat; tools: {sorted(self._tools)}")
        return {"type": "function", "function": {"name": choice}}

    def _request_body(self, settings: Sampling, tools: list[Tool], tool_choice: Any,
                      response_format: dict[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model or "llama-serve", "messages": self.messages()}
        extra: dict[str, Any] = {"cache_prompt": self.cache_prompt}
        for key, value in settings.items():
            (body if key in OPENAI_SAMPLING else extra)[key] = value
        if tools:
            body["tools"] = [t.to_openai() for t in tools]
            # A named choice is sent as its one tool, required: it holds on any llama-server (patch 0006 added the
            # named form to ours; others take it as "auto").
            body["tool_choice"] = "required" if isinstance(tool_choice, dict) else tool_choice
            if self.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = self.parallel_tool_calls
        if response_format is not None:
            body["response_format"] = response_format
        body["extra_body"] = extra
        return body

    def _reply(self, settings: Sampling, *, tools: list[Tool], tool_choice: Any,
               response_format: dict[str, Any] | None) -> Generator[Any, None, Turn]:
        """Stream one assistant reply; add it to the turns (also when interrupted) and return it."""
        self._fit_context(settings, tools)
        body = self._request_body(settings, tools, tool_choice, response_format)
        try:
            stream = self._client.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                                          **body)
        except openai.APIConnectionError as e:
            self._raise_lost(e)
        text: list[str] = []
        reasoning: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage: Usage | None = None
        timings: dict[str, Any] | None = None
        finish: str | None = None
        complete = False
        try:
            for chunk in stream:
                extra = chunk.model_extra or {}
                timings = extra.get("timings", timings)
                if chunk.usage is not None:
                    details = chunk.usage.prompt_tokens_details
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens,
                                  (details.cached_tokens or 0) if details else 0)
                for choice in chunk.choices:
                    delta = choice.delta
                    finish = choice.finish_reason or finish
                    if delta.content:
                        text.append(delta.content)
                        yield TextDelta(delta.content)
                    thought = (delta.model_extra or {}).get("reasoning_content")
                    if thought:
                        reasoning.append(thought)
                        yield ReasoningDelta(thought)
                    for part in delta.tool_calls or ():
                        entry = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                        entry["id"] = part.id or entry["id"]
                        if part.function is not None:
                            entry["name"] += part.function.name or ""
                            entry["arguments"] += part.function.arguments or ""
            complete = True
        except Exception as e:  # the HTTP library's own errors when the connection drops
            self._raise_lost(e)
        finally:
            stream.close()  # leaving early closes the connection: the server stops generating
            tool_calls = tuple(ToolCall(c["id"] or f"call_{i}", c["name"], c["arguments"],
                                        parse_arguments(c["arguments"])) for i, c in sorted(calls.items()))
            reply = Turn("assistant", "".join(text), tool_calls=tool_calls if complete else (),
                         reasoning="".join(reasoning), usage=usage, timings=timings, finish_reason=finish,
                         interrupted=not complete)
            self._turns.append(reply)
        yield TurnDone(reply)
        return reply

    def _raise_lost(self, error: Exception) -> NoReturn:
        """Raise for a request that failed: if the server we know the process of died, a ServerError with its
        exit code and last log lines; else ``error`` itself."""
        server = self.endpoint
        if isinstance(server, Server):
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(2)  # a dying server may still be exiting
            if not server.running:
                raise ServerError("the server died during the request", server.proc.returncode,
                                  server.logs(20)) from error
        raise error

    # -- context ----------------------------------------------------------------------------------------
    def _count(self, messages: list[dict[str, Any]], tools: list[Tool]) -> int:
        body: dict[str, Any] = {"model": self.model or "llama-serve", "messages": messages}
        if tools:
            body["tools"] = [t.to_openai() for t in tools]
        return int(self.endpoint._json("/v1/chat/completions/input_tokens", body)["input_tokens"])

    def context_size(self) -> int:
        """Tokens one request may hold on the server (its context per slot)."""
        if self._n_ctx is None:
            self._n_ctx = int(self.endpoint.props()["default_generation_settings"]["n_ctx"])
        return self._n_ctx

    def _fit_context(self, settings: Sampling, tools: list[Tool]) -> None:
        """Raise ContextOverflowError when history + max_tokens exceeds the context; with truncate="oldest",
        drop whole oldest exchanges (never the system prompt or the exchange under way) until it fits."""
        limit = self.context_size()
        reserve = int(settings.get("max_tokens") or 0)
        while True:
            needed = self._count(self.messages(), tools) + reserve
            if needed <= limit:
                return
            cut = self._oldest_exchange_end() if self.truncate == "oldest" else 0
            if cut == 0:
                raise core.ContextOverflowError(
                    f"the conversation needs {needed - reserve} prompt tokens + max_tokens {reserve} = {needed} "
                    f"> the server's context of {limit} tokens; start a new chat, lower max_tokens, or use "
                    'truncate="oldest"')
            self.dropped += self._turns[:cut]
            del self._turns[:cut]

    def _oldest_exchange_end(self) -> int:
        """Index of the second user turn (the first exchange ends before it); 0 if there is only one."""
        users = [i for i, t in enumerate(self._turns) if t.role == "user"]
        return users[1] if len(users) > 1 else 0

    # -- tools ------------------------------------------------------------------------------------------
    def _run_tools(self, calls: Sequence[ToolCall],
                   loop: asyncio.AbstractEventLoop | None) -> Generator[Any, None, None]:
        """Run the calls (concurrently, up to max_parallel_tools) and add their results in call order."""
        for call in calls:
            yield ToolCallStarted(call)
        workers = max(1, min(self.max_parallel_tools, len(calls)))
        with ThreadPoolExecutor(workers, thread_name_prefix="llama-serve-tool") as pool:
            futures = [pool.submit(self._run_tool, call, loop) for call in calls]
            results = [f.result() for f in futures]
        for call, result in zip(calls, results, strict=True):
            self._turns.append(tool_turn(result))
            yield ToolCallFinished(call, result)

    def _run_tool(self, call: ToolCall, loop: asyncio.AbstractEventLoop | None) -> ToolResult:
        def failed(message: str, cause: BaseException | None = None) -> ToolResult:
            if self.tool_errors == "raise":
                raise ToolError(f"tool call {call.name}: {message}", call) from cause
            return ToolResult(call.id, call.name, f"Error: {message}", error=True)

        tool = self._tools.get(call.name)
        if tool is None:
            return failed(f"there is no tool named {call.name!r}; the tools are {sorted(self._tools)}")
        if call.arguments is None:
            return failed(f"the arguments are not a JSON object: {call.raw_arguments!r}")
        try:
            arguments = tool.validate(call.arguments)
        except pydantic.ValidationError as e:
            return failed(f"invalid arguments: {e}", e)
        if self.on_tool_call is not None and not self.on_tool_call(call):
            return ToolResult(call.id, call.name, "Error: the user did not allow this call", error=True)
        try:
            if tool.timeout is None:
                value = tool.call(arguments, loop)
            else:  # the function keeps its thread if it overruns: Python cannot stop it, only stop waiting
                runner = ThreadPoolExecutor(1, thread_name_prefix=f"llama-serve-tool-{tool.name}")
                try:
                    value = runner.submit(tool.call, arguments, loop).result(tool.timeout)
                finally:
                    runner.shutdown(wait=False)
        except FutureTimeout as e:
            return failed(f"timed out after {tool.timeout} s", e)
        except Exception as e:
            return failed(f"{type(e).__name__}: {e}", e)
        return ToolResult(call.id, call.name, result_text(value))

    def _answer_open_calls(self, start: int, reason: str) -> None:
        """Give calls from ``start`` on that have no result an error result, so the history stays valid."""
        answered = {t.tool_result.call_id for t in self._turns[start:] if t.tool_result is not None}
        for turn in list(self._turns[start:]):
            for call in turn.tool_calls:
                if call.id not in answered:
                    self._turns.append(tool_turn(ToolResult(call.id, call.name, f"Error: {reason}", error=True)))

    def _committed(self, start: int) -> None:
        """Called when an exchange ends (turns from ``start`` on are new); ``Memory`` stores them here."""

    # -- files ------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format": FILE_FORMAT, "version": FILE_VERSION, "system_prompt": self.system_prompt,
                "model": self.model, "sampling": dict(self.sampling), "turns": [t.to_json() for t in self._turns]}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the conversation (system prompt, sampling, turns) as versioned JSON, atomically."""
        path = Path(path)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False), encoding="utf-8")
        partial.replace(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], **chat_options: Any) -> Chat:
        """A chat continued from :meth:`save`'s file; ``chat_options`` as for ``Chat`` (where its server is)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ChatFileError(f"{path} is not a saved chat (not JSON: {e})") from e
        chat = cls(**chat_options)
        try:
            chat.restore(data)
        except ChatFileError:
            chat.close()
            raise
        return chat

    def restore(self, data: dict[str, Any]) -> None:
        """Take system prompt, sampling and turns from :meth:`to_json`'s form."""
        if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
            raise ChatFileError("not a saved llama-serve chat")
        version = data.get("version")
        if not isinstance(version, int) or version > FILE_VERSION:
            raise ChatFileError(f"saved by a newer llama-serve (chat file version {version}; this one reads up "
                                f"to {FILE_VERSION}): upgrade llama-serve")
        try:
            turns = [Turn.from_json(t) for t in data["turns"]]
            sampling = _sampling(**data.get("sampling", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise ChatFileError(f"corrupt chat file: {e}") from e
        self.system_prompt = data.get("system_prompt")
        self.sampling = Sampling(**{**self.sampling, **sampling})
        self._turns = turns


@dataclass(frozen=True)
class _Result:
    """The last event of an exchange: what ``send`` returns."""

    value: Any


def _sampling(**values: Any) -> Sampling:
    unknown = set(values) - SAMPLING_KEYS
    if unknown:
        raise TypeError(f"unknown sampling settings: {sorted(unknown)}")
    return Sampling(**{k: v for k, v in values.items() if v is not None})  # type: ignore[typeddict-item,no-any-return]


__all__ = ["Chat", "ChatFileError", "Event", "ReasoningDelta", "Sampling", "TextDelta", "ToolCallFinished",
           "ToolCallStarted", "ToolError", "ToolLoopError", "TurnDone"]
