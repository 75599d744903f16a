"""``ls.Memory``: conversations per (user, channel) in SQLite, on the real server."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import llama_serve as ls


@pytest.fixture(scope="module")
def server(deterministic_model: Path) -> Iterator[ls.Server]:
    with ls.Server(deterministic_model, ctx_size=8192, parallel=4) as srv:
        yield srv


def test_conversations_are_kept_per_user_and_channel(server: ls.Server, tmp_path: Path) -> None:
    memory = ls.Memory(tmp_path / "bot.db")
    alice = memory.get("alice", "general", server=server, system_prompt="Be kind.", max_tokens=4)
    alice.send("hello")
    memory.get("alice", "random", server=server, max_tokens=4).send("elsewhere")
    memory.get("bob", "general", server=server, max_tokens=4).send("hi")
    assert alice.user == "alice" and alice.channel == "general" and alice.started <= alice.last_update

    again = ls.Memory(tmp_path / "bot.db").get("alice", "general", server=server)
    assert again.turns == alice.turns and again.system_prompt == "Be kind."
    again.send("more", max_tokens=2)
    assert len(memory.get("alice", "general", server=server).turns) == 4

    listed = memory.conversations(user="alice")
    assert [c.channel for c in listed] == ["general", "random"] and listed[0].turns == 4
    assert len(memory.conversations()) == 3
    exported = memory.export("bob")
    assert exported[0]["turns"][0]["content"] == "hi"
    assert memory.delete("alice", "random") and not memory.delete("alice", "random")
    assert [c.channel for c in memory.conversations("alice")] == ["general"]


def test_history_rewrites_are_stored(server: ls.Server, tmp_path: Path) -> None:
    memory = ls.Memory(tmp_path / "m.db")
    chat = memory.get("u", server=server, max_tokens=2)
    chat.send("one")
    chat.send("two")
    chat.set_turns(chat.turns[:2])
    chat.save_to_memory()
    assert memory.get("u", server=server).turns == chat.turns


def test_many_threads_share_one_memory(server: ls.Server, tmp_path: Path) -> None:
    memory = ls.Memory(tmp_path / "threads.db")
    errors: list[BaseException] = []

    def user(n: int) -> None:
        try:
            chat = memory.get(f"user{n}", server=server, max_tokens=2)
            for i in range(3):
                chat.send(f"message {i}")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=user, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(c.turns for c in memory.conversations()) == [6] * 6


def test_kill_during_a_turn_loses_at_most_that_turn(server: ls.Server, tmp_path: Path) -> None:
    db = tmp_path / "kill.db"
    script = textwrap.dedent(f"""
        import llama_serve as ls
        memory = ls.Memory({str(db)!r})
        chat = memory.get("k", base_url={server.base_url!r}, max_tokens=3)
        chat.send("kept")
        print("committed", flush=True)
        for piece in chat.stream("lost", max_tokens=1500):
            print("streaming", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "committed"
    assert child.stdout.readline().strip() == "streaming"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    turns = ls.Memory(db).get("k", server=server).turns
    assert len(turns) == 2 and turns[0].content == "kept"
    deadline = time.monotonic() + 5
    while any(s["is_processing"] for s in server.slots()) and time.monotonic() < deadline:
        time.sleep(0.05)
