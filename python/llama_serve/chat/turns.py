"""Turns: the immutable records a conversation is made of, and their OpenAI-message and JSON forms."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Literal

Role = Literal["user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """A call the model asked for: ``arguments`` parsed from ``raw_arguments`` (``None`` if it was not JSON)."""

    id: str
    name: str
    raw_arguments: str
    arguments: dict[str, Any] | None = None

    def to_openai(self) -> dict[str, Any]:
        # Arguments that are not JSON (a call cut short by max_tokens) cannot be rendered by a chat template:
        # the history shows an empty call, and the tool result names what the model wrote.
        arguments = self.raw_arguments if self.arguments is not None else "{}"
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": arguments}}


@dataclass(frozen=True)
class ToolResult:
    """What a tool call gave back, as the text the model is shown; ``error`` when it failed."""

    call_id: str
    name: str
    content: str
    error: bool = False


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the server took from its cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Turn:
    """One message: a user's text, an assistant's reply (text and/or tool calls), or a tool's result.

    Assistant turns carry what the server said about them: ``usage``, ``timings`` (llama.cpp's), the
    ``finish_reason``, and ``interrupted`` when generation was stopped before it finished.
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_result: ToolResult | None = None
    reasoning: str = ""
    usage: Usage | None = None
    timings: dict[str, Any] | None = field(default=None, compare=False)
    finish_reason: str | None = None
    interrupted: bool = False

    @property
    def text(self) -> str:
        return self.content

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI chat message for this turn."""
        if self.role == "tool":
            assert self.tool_result is not None
            return {"role": "tool", "tool_call_id": self.tool_result.call_id, "content": self.tool_result.content}
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        return message

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        for f in fields(self)[2:]:
            value = getattr(self, f.name)
            if value in (None, (), "", False):
                continue
            if f.name == "tool_calls":
                value = [vars(call) for call in value]
            elif f.name in ("tool_result", "usage"):
                value = vars(value)
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Turn:
        if data.get("role") not in ("user", "assistant", "tool"):
            raise ValueError(f"not a turn: role {data.get('role')!r}")
        return cls(
            role=data["role"],
            content=str(data.get("content", "")),
            tool_calls=tuple(ToolCall(**call) for call in data.get("tool_calls", ())),
            tool_result=ToolResult(**data["tool_result"]) if data.get("tool_result") else None,
            reasoning=str(data.get("reasoning", "")),
            usage=Usage(**data["usage"]) if data.get("usage") else None,
            timings=data.get("timings"),
            finish_reason=data.get("finish_reason"),
            interrupted=bool(data.get("interrupted", False)),
        )


def tool_turn(result: ToolResult) -> Turn:
    return Turn("tool", result.content, tool_result=result)


def parse_arguments(raw: str) -> dict[str, Any] | None:
    """A tool call's arguments as a dict, or ``None`` when they are not a JSON object."""
    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
