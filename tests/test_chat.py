"""``ls.Chat``: lifetime, turns, streaming and cancellation, async, context, files — on the real server.

The deterministic model answers the same text to the same prompt, so what Chat does is compared with what the
bare ``openai`` client gets for the same messages. Tools and structured output are in ``test_chat_tools.py``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import llama_serve as ls
from serverproc import outlives_a_killed_parent
from toolcases import template_server


@pytest.fixture(scope="module")
def server(deterministic_model: Path) -> Iterator[ls.Server]:
    with ls.Server(deterministic_model, ctx_size=4096, parallel=2) as srv:
        yield srv


def bare_reply(srv: ls.Server, messages: list[dict[str, str]], max_tokens: int) -> str:
    reply = srv.openai().chat.completions.create(model="m", messages=messages, max_tokens=max_tokens,  # type: ignore[arg-type]
                                                 temperature=0)
    return reply.choices[0].message.content or ""


def idle(srv: ls.Server, within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(slot["is_processing"] for slot in srv.slots()):
            return True
        time.sleep(0.05)
    return False


def test_exactly_one_way_to_reach_a_server(server: ls.Server) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ls.Chat()
    with pytest.raises(ValueError, match="exactly one"):
        ls.Chat(base_url=server.base_url, server=server)
    with pytest.raises(ValueError, match="apply only to a server the chat spawns"):
        ls.Chat(server=server, ctx_size=512)


def test_turns_match_the_bare_client(server: ls.Server) -> None:
    chat = ls.Chat(server=server, system_prompt="Be brief.", temperature=0, max_tokens=12)
    first = chat.send("Hello there")
    assert first == bare_reply(server, [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Hello there"}], 12)
    second = chat.send("And again")
    assert second == bare_reply(server, chat.messages()[:-1], 12)
    assert [t.role for t in chat.turns] == ["user", "assistant", "user", "assistant"]
    last = chat.last_turn
    assert last is not None and last.content == second and last.finish_reason == "length"
    assert last.usage is not None and last.usage.completion_tokens == 12
    assert last.timings is not None and last.timings["predicted_n"] == 12
    # The exact prompt size: counted for the history, then seen by the server for the same history.
    chat.set_turns(chat.turns[:-1])
    counted = chat.tokens()
    chat.send(None, max_tokens=1)
    assert chat.last_turn is not None and chat.last_turn.usage is not None
    assert chat.last_turn.usage.prompt_tokens == counted
    chat.close()
    assert server.health() == 200  # a shared server is not the chat's to stop


def test_second_turn_reuses_the_prompt_cache(server: ls.Server) -> None:
    chat = ls.Chat(server=server, temperature=0, max_tokens=8)
    chat.send("One two three four five six seven eight nine ten " * 5)
    first = chat.turns[-1].usage
    chat.send("Eleven")
    usage = chat.turns[-1].usage
    assert first is not None and usage is not None
    assert usage.cached_tokens >= first.prompt_tokens  # only the reply and the new turn are processed


def test_streamed_pieces_make_the_sent_text(server: ls.Server) -> None:
    chat = ls.Chat(server=server, temperature=0, max_tokens=10)
    pieces = list(chat.stream("Stream me"))
    assert len(pieces) > 1
    assert "".join(pieces) == bare_reply(server, chat.messages()[:1], 10)
    events = list(chat.copy().stream(None, events=True, max_tokens=3))
    assert isinstance(events[-1], ls.chat.TurnDone) and not events[-1].turn.interrupted
    assert all(isinstance(e, ls.chat.TextDelta) for e in events[:-1])


def test_leaving_a_stream_stops_generation_and_keeps_the_partial_turn(server: ls.Server) -> None:
    chat = ls.Chat(server=server, temperature=0, max_tokens=1500)
    got = ""
    for i, piece in enumerate(chat.stream("Go on for a long time")):
        got += piece
        if i == 2:
            break
    assert idle(server), "the slot kept generating after the client left"
    turn = chat.last_turn
    assert turn is not None and turn.role == "assistant" and turn.interrupted and turn.content.startswith(got)
    assert chat.send("Next", max_tokens=2)  # the conversation goes on


def test_async_send_stream_and_cancel(server: ls.Server) -> None:
    async def main() -> None:
        chat = ls.Chat(server=server, temperature=0, max_tokens=6)
        text = await chat.send_async("Async hello")
        assert text == bare_reply(server, chat.messages()[:1], 6)
        pieces = [p async for p in chat.stream_async("More", max_tokens=4)]
        assert "".join(pieces) == chat.turns[-1].content

        async def consume() -> None:
            async for _ in chat.stream_async("Long", max_tokens=1500):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert idle(server)
        assert chat.turns[-1].interrupted

    asyncio.run(main())


def test_one_exchange_at_a_time(server: ls.Server) -> None:
    chat = ls.Chat(server=server, max_tokens=50)
    stream = chat.stream("first")
    next(stream)
    with pytest.raises(RuntimeError, match="already answering"):
        chat.send("second")
    stream.close()
    assert chat.turns[-1].interrupted


def test_context_overflow_is_an_error_with_the_numbers(deterministic_model: Path) -> None:
    with ls.Chat(deterministic_model, ctx_size=256, temperature=0, max_tokens=8) as chat:
        chat.send("short")
        before = chat.turns
        with pytest.raises(ls.ContextOverflowError, match=r"prompt tokens \+ max_tokens 8 = \d+ > the server's "
                                                          r"context of 256"):
            chat.send("word " * 300)
        assert chat.turns == before  # nothing lost, nothing half-added
        chat.truncate = "oldest"
        for i in range(8):
            chat.send(f"round {i} " + "word " * 40)
        assert chat.dropped and chat.dropped[0].content == "short"
        assert chat.tokens() + 8 <= 256


def test_owned_server_lives_and_dies_with_the_chat(deterministic_model: Path) -> None:
    chat = ls.Chat(deterministic_model, ctx_size=512)
    owned = chat.server
    assert isinstance(owned, ls.Server) and owned.running
    chat.send("hi", max_tokens=2)
    chat.close()
    assert not owned.running
    with pytest.raises(ls.ClosedError):
        chat.send("again")


def test_owned_server_dies_with_a_killed_parent(deterministic_model: Path) -> None:
    assert not outlives_a_killed_parent(f"child = ls.Chat({str(deterministic_model)!r}, ctx_size=256).server")


@pytest.mark.parametrize("how", ["thread", "executor", "to_thread"])
def test_a_chat_made_in_a_short_lived_thread_keeps_its_server(deterministic_model: Path, how: str) -> None:
    def make() -> ls.Chat:
        return ls.Chat(deterministic_model, ctx_size=256)

    if how == "thread":
        made: list[ls.Chat] = []
        worker = threading.Thread(target=lambda: made.append(make()))
        worker.start()
        worker.join()
        chat = made[0]
    elif how == "executor":
        with ThreadPoolExecutor(1) as pool:
            chat = pool.submit(make).result()
    else:
        chat = asyncio.run(asyncio.to_thread(make))
    time.sleep(1.0)  # the parent-death signal, had it followed the ended thread, would have fired by now
    with chat:
        assert chat.send("still there?", max_tokens=2)


def test_a_server_that_dies_mid_stream_is_a_clear_error(deterministic_model: Path) -> None:
    with ls.Chat(deterministic_model, ctx_size=4096, max_tokens=1500) as chat:
        server = chat.server
        assert isinstance(server, ls.Server)
        with pytest.raises(ls.ServerError, match="died during the request") as info:
            for i, _ in enumerate(chat.stream("talk")):
                if i == 2:
                    server.proc.send_signal(signal.SIGKILL)
        assert info.value.returncode == -signal.SIGKILL
        assert chat.turns[-1].interrupted


def test_save_and_load(server: ls.Server, tmp_path: Path) -> None:
    chat = ls.Chat(server=server, system_prompt="S", temperature=0, max_tokens=4)
    chat.send("remember me")
    path = tmp_path / "chat.json"
    chat.save(path)
    loaded = ls.Chat.load(path, server=server)
    assert loaded.turns == chat.turns and loaded.system_prompt == "S" and loaded.sampling == chat.sampling
    assert loaded.send("and now") == chat.send("and now")

    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "version": 99}))
    with pytest.raises(ls.chat.ChatFileError, match="newer llama-serve"):
        ls.Chat.load(path, server=server)
    path.write_text(path.read_text()[:40])
    with pytest.raises(ls.chat.ChatFileError, match="not a saved chat"):
        ls.Chat.load(path, server=server)
    path.write_text(json.dumps({**data, "turns": [{"role": "wizard"}]}))
    with pytest.raises(ls.chat.ChatFileError, match="corrupt"):
        ls.Chat.load(path, server=server)


def test_connect_by_base_url(server: ls.Server) -> None:
    chat = ls.Chat(base_url=server.base_url, temperature=0, max_tokens=5)
    assert chat.send("hi") == bare_reply(server, [{"role": "user", "content": "hi"}], 5)
    assert not hasattr(chat.server, "proc")


def test_unknown_sampling_settings_are_refused(server: ls.Server) -> None:
    chat = ls.Chat(server=server)
    with pytest.raises(TypeError, match="unknown sampling"):
        chat.send("hi", temprature=0.5)  # type: ignore[call-arg]
    assert chat.turns == ()


def test_a_template_without_a_system_role_gets_it_merged() -> None:
    with template_server("gemma-2") as (srv, _):  # Gemma 2's template raises on a system message
        chat = ls.Chat(server=srv, system_prompt="Be brief.", max_tokens=3)
        assert isinstance(chat.send("hi"), str)
        prompt = srv._json("/apply-template", {"messages": chat.messages()[:2]})["prompt"]
        assert "<start_of_turn>user\nBe brief.\nhi" in prompt
