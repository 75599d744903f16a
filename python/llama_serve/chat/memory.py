"""``Memory``: conversations kept per (user, channel) in one SQLite file, for bots.

Each completed exchange is committed in one transaction (WAL journal): a process killed during a turn
loses at most that turn and never corrupts the file. Safe from many threads (one connection per thread)
and many processes (SQLite's locking, with a busy timeout).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .chat import Chat
from .turns import Turn

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    user TEXT NOT NULL, channel TEXT NOT NULL, started REAL NOT NULL, last_update REAL NOT NULL,
    system_prompt TEXT, PRIMARY KEY (user, channel));
CREATE TABLE IF NOT EXISTS turns (
    user TEXT NOT NULL, channel TEXT NOT NULL, position INTEGER NOT NULL, turn TEXT NOT NULL,
    PRIMARY KEY (user, channel, position),
    FOREIGN KEY (user, channel) REFERENCES conversations (user, channel) ON DELETE CASCADE);
"""


@dataclass(frozen=True)
class Conversation:
    user: str
    channel: str
    started: float  # seconds since the epoch
    last_update: float
    turns: int


class Memory:
    """Stored conversations keyed by (user, channel). ``get`` gives a :class:`MemoryChat` that saves itself."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._timeout = timeout
        self._local = threading.local()
        self._connection().executescript(SCHEMA)  # its own transaction

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def get(self, user: str, channel: str = "default", **chat_options: Any) -> MemoryChat:
        """The conversation of ``user`` in ``channel``: continued if stored, else new. ``chat_options`` as for
        ``Chat`` (where the server is: ``server=``, ``base_url=`` or a model; ``system_prompt=`` for a new one)."""
        now = time.time()
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO conversations VALUES (?, ?, ?, ?, ?)",
                       (user, channel, now, now, chat_options.get("system_prompt")))
            started, last_update, system_prompt = db.execute(
                "SELECT started, last_update, system_prompt FROM conversations WHERE user=? AND channel=?",
                (user, channel)).fetchone()
            rows = db.execute("SELECT turn FROM turns WHERE user=? AND channel=? ORDER BY position",
                              (user, channel)).fetchall()
        chat = MemoryChat(self, user, channel, started, last_update, **chat_options)
        if "system_prompt" not in chat_options:
            chat.system_prompt = system_prompt
        chat.set_turns(Turn.from_json(json.loads(turn)) for (turn,) in rows)
        chat._stored = chat.turns
        return chat

    def _store(self, chat: MemoryChat) -> None:
        """Write what changed in ``chat`` since it was last stored, in one transaction."""
        turns, stored = chat.turns, chat._stored
        same = min(len(turns), len(stored))  # how many turns are stored as they are now
        same = next((i for i, (a, b) in enumerate(zip(turns, stored, strict=False)) if a != b), same)
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM turns WHERE user=? AND channel=? AND position>=?",
                       (chat.user, chat.channel, same))
            db.executemany("INSERT INTO turns VALUES (?, ?, ?, ?)",
                           [(chat.user, chat.channel, i, json.dumps(turns[i].to_json()))
                            for i in range(same, len(turns))])
            db.execute("UPDATE conversations SET last_update=?, system_prompt=? WHERE user=? AND channel=?",
                       (now, chat.system_prompt, chat.user, chat.channel))
        chat._stored = turns
        chat.last_update = now

    def conversations(self, user: str | None = None) -> list[Conversation]:
        """Stored conversations (of ``user``), most recently updated first."""
        query = ("SELECT c.user, c.channel, c.started, c.last_update, COUNT(t.position) FROM conversations c "
                 "LEFT JOIN turns t ON t.user=c.user AND t.channel=c.channel "
                 + ("WHERE c.user=? " if user is not None else "")
                 + "GROUP BY c.user, c.channel ORDER BY c.last_update DESC")
        rows = self._connection().execute(query, (user,) if user is not None else ()).fetchall()
        return [Conversation(*row) for row in rows]

    def delete(self, user: str, channel: str = "default") -> bool:
        """Forget a conversation; False if there was none."""
        with self._transaction() as db:
            return db.execute("DELETE FROM conversations WHERE user=? AND channel=?", (user, channel)).rowcount > 0

    def export(self, user: str | None = None) -> list[dict[str, Any]]:
        """Every stored conversation (of ``user``) as JSON-ready dicts, turns included."""
        db = self._connection()
        out = []
        for c in self.conversations(user):
            system_prompt = db.execute("SELECT system_prompt FROM conversations WHERE user=? AND channel=?",
                                       (c.user, c.channel)).fetchone()[0]
            rows = db.execute("SELECT turn FROM turns WHERE user=? AND channel=? ORDER BY position",
                              (c.user, c.channel)).fetchall()
            out.append({"user": c.user, "channel": c.channel, "started": c.started, "last_update": c.last_update,
                        "system_prompt": system_prompt, "turns": [json.loads(t) for (t,) in rows]})
        return out

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class MemoryChat(Chat):
    """A :class:`Chat` stored in a :class:`Memory`: each finished exchange is committed there."""

    def __init__(self, memory: Memory, user: str, channel: str, started: float, last_update: float,
                 **chat_options: Any) -> None:
        super().__init__(**chat_options)
        self.memory = memory
        self.user = user
        self.channel = channel
        self.started = started
        self.last_update = last_update
        self._stored: tuple[Turn, ...] = ()  # the turns as last written to the memory

    def _committed(self, start: int) -> None:
        self.memory._store(self)

    def save_to_memory(self) -> None:
        """Store changes made outside an exchange (``set_turns``, ``system_prompt``)."""
        self.memory._store(self)
