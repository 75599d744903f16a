"""llama-server's Prometheus ``/metrics`` text, parsed tolerantly into a typed snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

PREFIX = "llamacpp:"


@dataclass(frozen=True)
class Metrics:
    """One scrape. Fields missing from the server's output are 0; every sample is also in ``raw``."""

    prompt_tokens_total: float = 0.0
    prompt_seconds_total: float = 0.0
    tokens_predicted_total: float = 0.0
    tokens_predicted_seconds_total: float = 0.0
    prompt_tokens_seconds: float = 0.0  # prompt processing throughput, tokens/s
    predicted_tokens_seconds: float = 0.0  # generation throughput, tokens/s
    requests_processing: float = 0.0  # busy slots
    requests_deferred: float = 0.0  # waiting for a slot
    n_decode_total: float = 0.0
    raw: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Metrics:
        raw: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                raw[sample.name.removeprefix(PREFIX)] = float(sample.value)
        known = {name: raw[name] for name in cls.__dataclass_fields__ if name != "raw" and name in raw}
        return cls(**known, raw=raw)  # names we do not know (upstream renames) are kept in raw only


def timings(response: Any) -> dict[str, float]:
    """llama-server's per-response ``timings`` (``prompt_n``, ``prompt_per_second``, ``predicted_n``,
    ``predicted_per_second``, …) from an ``openai`` response object or a parsed JSON body; {} if absent."""
    data = response if isinstance(response, Mapping) else (getattr(response, "model_extra", None) or {})
    return dict(data.get("timings") or {})
