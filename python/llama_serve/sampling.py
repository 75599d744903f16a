"""Sampler settings, turned into llama.cpp's common sampler chain when bound to a model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._native import core, reraise_unencodable

DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: a random seed per sampler


@dataclass(frozen=True)
class Sampler:
    """How to pick the next token. ``temperature <= 0`` is greedy.

    ``grammar`` is GBNF; ``json_schema`` (a dict or JSON text) is turned into GBNF by llama.cpp's own
    converter. Invalid grammars or schemas raise ``ValueError``.
    """

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int = DEFAULT_SEED
    grammar: str | None = None
    json_schema: Mapping[str, Any] | str | None = None
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.grammar is not None and self.json_schema is not None:
            raise ValueError("give grammar or json_schema, not both")
        if self.json_schema is not None:
            schema = self.json_schema if isinstance(self.json_schema, str) else json.dumps(self.json_schema)
            try:
                object.__setattr__(self, "grammar", core.json_schema_to_grammar(schema))
            except TypeError:
                reraise_unencodable(schema)
                raise
        if not 0 <= self.seed <= 0xFFFFFFFF:
            raise ValueError(f"seed must be in [0, 2**32), not {self.seed}")

    def bind(self, model: core.Model) -> core.Sampler:
        """A fresh native sampler chain for ``model`` (state: penalties, grammar position, RNG)."""
        try:
            return core.Sampler(
                model,
                temperature=self.temperature,
                top_k=self.top_k,
                top_p=self.top_p,
                min_p=self.min_p,
                typical_p=self.typical_p,
                repeat_penalty=self.repeat_penalty,
                repeat_last_n=self.repeat_last_n,
                frequency_penalty=self.frequency_penalty,
                presence_penalty=self.presence_penalty,
                seed=self.seed,
                grammar=self.grammar or "",
                logit_bias=dict(self.logit_bias),
                ignore_eos=self.ignore_eos,
            )
        except TypeError:
            reraise_unencodable(self.grammar)
            raise


GREEDY = Sampler(temperature=0.0)
