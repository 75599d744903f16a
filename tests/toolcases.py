"""Shared by the tool-call tests: the tools and question, the upstream chat templates by family, and a server
on one of them (a random-weight model with a vocabulary of that family, or one whose text spells its markers)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import llama_serve as ls
from llama_serve import testmodels

TEMPLATES = Path(__file__).resolve().parent.parent / "vendor" / "llama.cpp" / "models" / "templates"
THINK_TOKENS = ("<think>", "</think>")  # single tokens in DeepSeek-R1's own vocabulary, text in the upstream files
FAMILIES = {  # template family -> (upstream template file, vocabulary)
    "qwen-2.5": ("Qwen-Qwen2.5-7B-Instruct.jinja", "ggml-vocab-qwen2.gguf"),
    "hermes-3": ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", "ggml-vocab-qwen2.gguf"),
    "llama-3.1": ("meta-llama-Llama-3.1-8B-Instruct.jinja", "ggml-vocab-llama-bpe.gguf"),
    "llama-3.2": ("meta-llama-Llama-3.2-3B-Instruct.jinja", "ggml-vocab-llama-bpe.gguf"),
    "mistral-nemo": ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "ggml-vocab-llama-bpe.gguf"),
    "functionary-3.2": ("meetkai-functionary-medium-v3.2.jinja", "ggml-vocab-llama-bpe.gguf"),
    "deepseek-r1-distill": ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "ggml-vocab-qwen2.gguf"),
    "qwen-3": ("Qwen-Qwen3-0.6B.jinja", "ggml-vocab-qwen2.gguf"),
    "gpt-oss": ("openai-gpt-oss-120b.jinja", "ggml-vocab-llama-bpe.gguf"),
    "gemma-2": ("google-gemma-2-2b-it.jinja", "ggml-vocab-llama-spm.gguf"),
    "phi-3.5": ("microsoft-Phi-3.5-mini-instruct.jinja", "ggml-vocab-phi-3.gguf"),
}
EXTRA_TOKENS = {"deepseek-r1-distill": THINK_TOKENS}  # template markers the model needs as single tokens
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Tokyo", "Lima"]},
                   "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
TIME = {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}}, "required": ["zone"],
        "additionalProperties": False}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Forecast", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Clock", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "What will the weather be in Paris for the next 3 days?"}]


@contextmanager
def template_server(family: str, *extra_args: str,
                    **server_options: Any) -> Iterator[tuple[ls.Server, dict[str, float]]]:
    """A server on ``family``'s template, and the logit bias towards end-of-generation that the tests send: the
    grammar masks it until a call (or JSON answer) is complete, so a random model stops right after one."""
    template, vocab = FAMILIES[family]
    model = testmodels.tiny_random(vocab=vocab, extra_tokens=EXTRA_TOKENS.get(family, ()))
    with ls.Model(model, vocab_only=True) as m:
        stop_bias = {str(m.eos): 100.0}
    options = {"ctx_size": 4096, "parallel": 1, **server_options}
    with ls.Server(model, extra_args=["--chat-template-file", str(TEMPLATES / template), *extra_args],
                   **options) as srv:
        yield srv, stop_bias
