"""Structured output: a type (pydantic model, TypedDict, dataclass, …) or a JSON-schema dict, held by the
server's JSON-schema grammar and validated back into that type."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pydantic


class OutputError(ValueError):
    """The model's answer does not validate as the requested output (e.g. cut short by ``max_tokens``)."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(message)
        self.text = text


@dataclass(frozen=True)
class Output:
    """What ``send(output=...)`` asks for: the schema sent to the server and how to read the answer."""

    schema: dict[str, Any]
    adapter: pydantic.TypeAdapter[Any] | None  # None: a plain JSON-schema dict, answered as parsed JSON

    @classmethod
    def of(cls, output: Any) -> Output:
        if isinstance(output, dict):
            schema, adapter = output, None
        else:
            try:
                adapter = pydantic.TypeAdapter(output)
                schema = adapter.json_schema()
            except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError) as e:
                raise TypeError(f"output={output!r} cannot be described as a JSON schema: {e}") from e
        _check_expressible(schema)
        return cls(schema, adapter)

    def response_format(self) -> dict[str, Any]:
        name = str(self.schema.get("title") or "output")
        return {"type": "json_schema", "json_schema": {"name": name, "schema": self.schema, "strict": True}}

    def parse(self, text: str) -> Any:
        try:
            if self.adapter is not None:
                return self.adapter.validate_json(text)
            value = json.loads(text)
        except (pydantic.ValidationError, ValueError) as e:
            raise OutputError(f"the answer is not a valid {self.schema.get('title') or 'output'}: {e}", text) from e
        try:
            import jsonschema  # type: ignore[import-untyped]
        except ImportError:  # the grammar held the answer to the schema; validation is a second look
            return value
        try:
            jsonschema.validate(value, self.schema)
        except jsonschema.ValidationError as e:
            raise OutputError(f"the answer does not match the schema: {e.message}", text) from e
        return value


def _check_expressible(schema: dict[str, Any]) -> None:
    """Raise ValueError, before any request, when llama.cpp's grammar cannot express ``schema``."""
    from .._native import core

    try:
        core.json_schema_to_grammar(json.dumps(schema))
    except ValueError as e:
        raise ValueError(f"the output schema cannot be turned into a grammar: {e}") from e
