"""Tools from plain Python functions: a JSON schema from the signature, descriptions from the docstring.

Parameters may be annotated with anything pydantic understands (``str``, ``int``, ``Literal``, ``Enum``,
``list``, ``dict``, optionals and defaults, pydantic models, ``TypedDict``, dataclasses,
``Annotated[..., Field(description=...)]``). Arguments are validated against that model before the call.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic
from pydantic.fields import FieldInfo

_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params|Returns?|Yields?|Raises|Examples?|Notes?|See Also)\s*:?\s*$")
_GOOGLE_ARG = re.compile(r"^\s*\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ARG = re.compile(r"^(\w+)\s*(?::.*)?$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The summary (text before the first section) and each parameter's description, from a Google-style
    (``Args:``) or NumPy-style (``Parameters`` + dashes) docstring."""
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    i = 0
    while i < len(lines) and not _SECTION.match(lines[i].strip()):
        summary.append(lines[i])
        i += 1
    while i < len(lines):
        header = lines[i].strip()
        match = _SECTION.match(header)
        numpy = i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}
        i += 2 if numpy else 1
        body: list[str] = []
        while i < len(lines) and not (_SECTION.match(lines[i].strip()) and (
                lines[i].rstrip().endswith(":") or (i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}))):
            body.append(lines[i])
            i += 1
        if match and match.group(1) in ("Args", "Arguments", "Parameters", "Params"):
            params.update(_numpy_params(body) if numpy else _google_params(body))
    return " ".join(" ".join(summary).split()), params


def _google_params(body: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    indent = min((len(line) - len(line.lstrip()) for line in body if line.strip()), default=0)
    name = None
    for line in body:
        match = _GOOGLE_ARG.match(line)
        if match and len(line) - len(line.lstrip()) == indent:
            name = match.group(1)
            out[name] = match.group(2).strip()
        elif name and line.strip():
            out[name] = f"{out[name]} {line.strip()}".strip()
    return out


def _numpy_params(body: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    name = None
    for line in body:
        match = _NUMPY_ARG.match(line)
        if match and not line.startswith((" ", "\t")):
            name = match.group(1)
            out[name] = ""
        elif name and line.strip():
            out[name] = f"{out[name]} {line.strip()}".strip()
    return out


@dataclass(frozen=True, eq=False)
class Tool:
    """A Python function the model may call. Build with :meth:`from_function` (``Chat`` does it for you)."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any]
    arguments_model: type[pydantic.BaseModel]
    timeout: float | None = None

    @classmethod
    def from_function(cls, function: Callable[..., Any], *, name: str | None = None,
                      description: str | None = None, timeout: float | None = None) -> Tool:
        if isinstance(function, Tool):
            return function
        if not callable(function):
            raise TypeError(f"a tool must be a function, not {type(function).__name__}")
        name = str(name or getattr(function, "__name__", ""))
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,63}", name):
            raise ValueError(f"tool name {name!r} is not a valid function name")
        summary, docs = parse_docstring(inspect.getdoc(function))
        hints = typing.get_type_hints(function, include_extras=True)
        fields: dict[str, Any] = {}
        for param in inspect.signature(function).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"tool {name}: *args and **kwargs cannot be described to a model")
            if param.kind is param.POSITIONAL_ONLY:
                raise TypeError(f"tool {name}: positional-only parameter {param.name} cannot be passed by name")
            annotation = hints.get(param.name, Any)
            default: Any = ... if param.default is param.empty else param.default
            # The docstring describes a parameter unless Annotated[..., Field(description=...)] does.
            described = any(isinstance(m, FieldInfo) and m.description for m in getattr(annotation, "__metadata__", ()))
            doc = None if described else docs.get(param.name)
            if isinstance(default, FieldInfo):
                info = copy.copy(default)
                info.description = info.description or doc
            else:
                info = pydantic.Field(default, description=doc) if doc else pydantic.Field(default)
            fields[param.name] = (annotation, info)
        try:
            model = pydantic.create_model(f"{name}_arguments", __config__=pydantic.ConfigDict(extra="forbid"),
                                          **fields)
            schema = model.model_json_schema()
        except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError) as e:
            raise TypeError(f"tool {name}: its parameters cannot be described as JSON schema: {e}") from e
        schema.pop("title", None)
        return cls(name, description or summary, schema, function, model, timeout)

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments for the function (pydantic-validated, converted to the annotated types);
        ``pydantic.ValidationError`` when they do not fit."""
        validated = self.arguments_model.model_validate(arguments)
        return {name: getattr(validated, name) for name in type(validated).model_fields}

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)

    def call(self, arguments: dict[str, Any], loop: asyncio.AbstractEventLoop | None = None) -> Any:
        """Run the function; an ``async def`` runs on ``loop`` (the caller's, from ``stream_async``) or its own."""
        if not self.is_async:
            return self.function(**arguments)
        if loop is not None and loop.is_running():
            return asyncio.run_coroutine_threadsafe(self.function(**arguments), loop).result()
        return asyncio.run(self.function(**arguments))


def result_text(value: Any) -> str:
    """A tool's return value as the text shown to the model."""
    if isinstance(value, str):
        return value
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(pydantic.TypeAdapter(type(value)).dump_python(value, mode="json"))
    except (pydantic.PydanticSchemaGenerationError, TypeError, ValueError):
        return str(value)
