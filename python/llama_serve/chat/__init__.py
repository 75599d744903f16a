"""The chat layer: :class:`Chat` (a conversation with a server), its turns, tools and structured output,
and :class:`Memory` (conversations stored per user and channel)."""

from .chat import (
    Chat,
    ChatFileError,
    Event,
    ReasoningDelta,
    Sampling,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolError,
    ToolLoopError,
    TurnDone,
)
from .memory import Conversation, Memory, MemoryChat
from .output import OutputError
from .tools import Tool
from .turns import ToolCall, ToolResult, Turn, Usage

__all__ = [
    "Chat",
    "ChatFileError",
    "Conversation",
    "Event",
    "Memory",
    "MemoryChat",
    "OutputError",
    "ReasoningDelta",
    "Sampling",
    "TextDelta",
    "Tool",
    "ToolCall",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolError",
    "ToolLoopError",
    "ToolResult",
    "Turn",
    "TurnDone",
    "Usage",
]
