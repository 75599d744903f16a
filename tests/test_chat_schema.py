"""Tool schemas from Python functions and structured-output schemas (no server: what Chat sends and validates)."""

from __future__ import annotations

import dataclasses
import enum
from typing import Annotated, Any, Literal

import pydantic
import pytest
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from llama_serve.chat import Tool
from llama_serve.chat.output import Output, OutputError
from llama_serve.chat.tools import parse_docstring, result_text


class Unit(enum.Enum):
    C = "C"
    F = "F"


class Place(pydantic.BaseModel):
    name: str
    country: str = "FR"


class Window(TypedDict):
    start: int
    end: int


@dataclasses.dataclass
class Options:
    verbose: bool = False


def forecast(city: str, days: Annotated[int, pydantic.Field(ge=1, le=7, description="Days ahead")] = 3,
             unit: Unit = Unit.C, kind: Literal["rain", "sun"] | None = None, tags: list[str] | None = None,
             extra: dict[str, float] | None = None, place: Place | None = None, window: Window | None = None,
             options: Options | None = None) -> str:
    """Forecast for a city.

    Longer text that is part of the description.

    Args:
        city: City name, e.g. "Paris".
        days: Overridden by the Field's own description.
        unit (Unit): Temperature
            unit.

    Returns:
        The forecast.
    """
    return city


def test_schema_from_signature_and_google_docstring() -> None:
    tool = Tool.from_function(forecast)
    assert tool.name == "forecast"
    assert tool.description == "Forecast for a city. Longer text that is part of the description."
    props = tool.parameters["properties"]
    assert tool.parameters["required"] == ["city"] and tool.parameters["additionalProperties"] is False
    assert props["city"]["description"] == 'City name, e.g. "Paris".'
    assert props["days"] | {"title": None} == {"type": "integer", "minimum": 1, "maximum": 7, "default": 3,
                                               "description": "Days ahead", "title": None}
    assert props["unit"]["description"] == "Temperature unit."
    assert set(tool.parameters["$defs"]) >= {"Unit", "Place", "Window", "Options"}
    assert tool.to_openai()["function"]["name"] == "forecast"


def test_arguments_are_validated_and_converted() -> None:
    tool = Tool.from_function(forecast)
    kwargs = tool.validate({"city": "Oslo", "unit": "F", "place": {"name": "Oslo"}, "window": {"start": 1, "end": 2},
                            "options": {"verbose": True}})
    assert kwargs["unit"] is Unit.F and kwargs["place"] == Place(name="Oslo") and kwargs["options"] == Options(True)
    for bad in ({}, {"city": "Oslo", "days": 9}, {"city": "Oslo", "kind": "snow"}, {"city": "Oslo", "nope": 1}):
        with pytest.raises(pydantic.ValidationError):
            tool.validate(bad)


def test_numpy_docstrings() -> None:
    def area(width: float, height: float) -> float:
        """Area of a rectangle.

        Parameters
        ----------
        width : float
            The width,
            in metres.
        height : float
            The height.

        Returns
        -------
        float
        """
        return width * height

    summary, params = parse_docstring(area.__doc__)
    assert summary == "Area of a rectangle."
    assert params == {"width": "The width, in metres.", "height": "The height."}
    assert Tool.from_function(area).parameters["properties"]["width"]["description"] == "The width, in metres."


def test_functions_that_cannot_be_tools() -> None:
    def star(*args: Any) -> None:
        """No."""

    def keywords(**kwargs: Any) -> None:
        """No."""

    for function in (star, keywords):
        with pytest.raises(TypeError, match="cannot be described"):
            Tool.from_function(function)
    with pytest.raises(ValueError, match="not a valid function name"):
        Tool.from_function(lambda: None)
    with pytest.raises(TypeError, match="must be a function"):
        Tool.from_function(42)  # type: ignore[arg-type]


def test_results_become_text() -> None:
    assert result_text("as is") == "as is"
    assert result_text(Place(name="Lyon")) == '{"name":"Lyon","country":"FR"}'
    assert result_text({"a": [1, 2]}) == '{"a": [1, 2]}'
    assert result_text(Options(True)) == '{"verbose": true}'


def test_output_types_and_validation() -> None:
    city = Output.of(Place)
    assert city.response_format()["json_schema"]["schema"]["title"] == "Place"
    assert city.parse('{"name": "Nice"}') == Place(name="Nice")
    with pytest.raises(OutputError) as info:
        city.parse('{"name": ')
    assert info.value.text == '{"name": '
    assert Output.of(Window).parse('{"start": 1, "end": 2}') == {"start": 1, "end": 2}
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}}, "required": ["n"]}
    assert Output.of(schema).parse('{"n": 2}') == {"n": 2}
    with pytest.raises(OutputError, match="does not match the schema"):
        Output.of(schema).parse('{"n": 7}')
