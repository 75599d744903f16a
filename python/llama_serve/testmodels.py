"""Small GGUF models generated on the spot, for tests and the offline demo (no downloads).

Needs the ``gguf`` and ``numpy`` packages (``pip install "llama-serve[demo]"``) and an upstream
vocabulary file (``ggml-vocab-*.gguf`` from llama.cpp's ``models/`` folder). The wheel ships one,
``ggml-vocab-llama-spm.gguf`` (the default), so the default models and the demo need no source tree.

- :func:`tiny_random` — llama architecture, seeded random weights, a real vocabulary (optionally with extra
  control tokens, e.g. ``<think>``) and a chat template.
- :func:`deterministic` — weights built so greedy decoding is known in advance: attention and MLP
  outputs are zero, so the last hidden state is the current token's embedding, and ``output.weight``
  is ``token_embd`` with rows shifted by one, so the greedy next token of ``t`` is ``t + 1`` (mod vocab).

Files are cached by recipe under ``$LLAMA_SERVE_MODEL_CACHE`` (default ``~/.cache/llama-serve/models``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GENERATOR_VERSION = 1
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class Recipe:
    kind: str  # "random" or "deterministic"
    vocab: str  # vocabulary file name, e.g. ggml-vocab-llama-spm.gguf
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 4
    n_ff: int = 128
    n_ctx_train: int = 4096
    seed: int = 0
    f16: bool = False  # store matrices as F16 (realistic sizes), else F32
    # Tokens appended to the vocabulary as control tokens: markers a chat template needs as single tokens (a
    # thinking model's <think>, gpt-oss's <|channel|>) that the upstream vocabulary file spells as text.
    extra_tokens: tuple[str, ...] = ()


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "llama-serve" / "models"
    return Path(os.environ.get("LLAMA_SERVE_MODEL_CACHE", default))


def vocab_dir() -> Path:
    """llama.cpp's ``models/`` folder: $LLAMA_CPP_SOURCE_DIR, else ``vendor/llama.cpp`` of a checkout of ours in
    the current folder."""
    env = os.environ.get("LLAMA_CPP_SOURCE_DIR")
    candidates = [Path(env) / "models"] if env else []
    candidates.append(Path.cwd() / "vendor" / "llama.cpp" / "models")
    for folder in candidates:
        if (folder / "ggml-vocab-llama-spm.gguf").is_file():
            return folder
    looked = "\n".join(f"  - {c}" for c in candidates)
    raise FileNotFoundError(
        "no llama.cpp vocabulary files found; set LLAMA_CPP_SOURCE_DIR to a llama.cpp tree. "
        f"Looked in:\n{looked}"
    )


def vocab_path(name: str) -> Path:
    """The vocabulary file ``name``: from llama.cpp's ``models/`` folder (see :func:`vocab_dir`), else the one
    shipped in the package."""
    try:
        path = vocab_dir() / name
        if path.is_file():
            return path
    except FileNotFoundError:
        pass
    shipped = Path(__file__).resolve().parent / "vocab" / name
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(f"vocabulary {name} not found: the package ships only ggml-vocab-llama-spm.gguf; "
                            "set LLAMA_CPP_SOURCE_DIR to a llama.cpp tree for the others")


def tiny_random(vocab: str = "ggml-vocab-llama-spm.gguf", seed: int = 0, extra_tokens: tuple[str, ...] = ()) -> Path:
    """A 2-layer llama with seeded random weights and a real vocabulary (plus ``extra_tokens``, see Recipe)."""
    return build(Recipe(kind="random", vocab=vocab, seed=seed, extra_tokens=tuple(extra_tokens)))


def deterministic(vocab: str = "ggml-vocab-llama-spm.gguf") -> Path:
    """A llama whose greedy continuation of token ``t`` is ``t + 1``, ``t + 2``, … (mod vocab)."""
    return build(Recipe(kind="deterministic", vocab=vocab, n_embd=128, n_layer=1, n_ff=64, seed=1))


def realistic(quant: str = "Q4_0") -> Path:
    """Llama-3.2-1B dimensions (llama-bpe vocabulary, 16 layers, 2048 wide), random weights, quantized with the
    bundled llama-quantize: for benchmarks, where speed does not depend on the weight values."""
    f16 = build(Recipe(kind="random", vocab="ggml-vocab-llama-bpe.gguf", n_embd=2048, n_layer=16, n_head=32,
                       n_head_kv=8, n_ff=8192, n_ctx_train=131072, seed=5, f16=True))
    if quant.upper() == "F16":
        return f16
    out = f16.with_name(f16.stem + f"-{quant.upper()}.gguf")
    if not out.is_file():
        import subprocess

        from ._launcher import find_bin

        partial = out.with_suffix(".partial")
        subprocess.run([str(find_bin("llama-quantize")), str(f16), str(partial), quant.upper()], check=True,
                       capture_output=True)
        partial.replace(out)
    return out


def build(recipe: Recipe) -> Path:
    """Generate the model for ``recipe`` unless an identical one is cached; return its path."""
    vocab = vocab_path(recipe.vocab)
    fields = {k: v for k, v in asdict(recipe).items() if v != () or k != "extra_tokens"}  # keys of older recipes
    key = json.dumps({"v": GENERATOR_VERSION, **fields}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    out = cache_dir() / f"{recipe.kind}-{Path(recipe.vocab).stem}-{digest}.gguf"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(f".{os.getpid()}.partial")
        _write(recipe, vocab, partial)
        partial.replace(out)
    return out


def _copy_vocab(reader: Any, writer: Any, extra_tokens: tuple[str, ...] = ()) -> int:
    """Copy every ``tokenizer.*`` field of an upstream vocab file, with ``extra_tokens`` appended as control
    tokens; return the vocabulary size."""
    import gguf

    n_vocab = 0
    appended: dict[str, list[Any]] = {"tokenizer.ggml.tokens": list(extra_tokens),
                                      "tokenizer.ggml.token_type": [int(gguf.TokenType.CONTROL)] * len(extra_tokens),
                                      "tokenizer.ggml.scores": [0.0] * len(extra_tokens)}
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        value = field.contents()
        if extra_tokens and name in appended:
            value = [*value, *appended[name]]
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(name, value, field.types[0], sub_type=field.types[-1])
            if name == "tokenizer.ggml.tokens":
                n_vocab = len(value)
        else:
            writer.add_key_value(name, value, field.types[0])
    if n_vocab == 0:
        raise ValueError(f"{reader.path}: no tokenizer.ggml.tokens")
    return n_vocab


def _write(recipe: Recipe, vocab_path: Path, out: Path) -> None:
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(vocab_path)
    writer = gguf.GGUFWriter(out, "llama")
    n_vocab = _copy_vocab(reader, writer, recipe.extra_tokens)
    head_dim = recipe.n_embd // recipe.n_head
    writer.add_name(f"llama-serve {recipe.kind} test model")
    writer.add_context_length(recipe.n_ctx_train)
    writer.add_embedding_length(recipe.n_embd)
    writer.add_block_count(recipe.n_layer)
    writer.add_feed_forward_length(recipe.n_ff)
    writer.add_head_count(recipe.n_head)
    writer.add_head_count_kv(recipe.n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if recipe.f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_chat_template(CHAT_TEMPLATE)

    rng = np.random.default_rng(recipe.seed)
    deterministic = recipe.kind == "deterministic"

    matrix_type = np.float16 if recipe.f16 else np.float32

    def random(*shape: int, scale: float = 0.02) -> Any:
        values = rng.standard_normal(shape, dtype=np.float32)
        values *= scale
        return values.astype(matrix_type) if len(shape) > 1 else values

    def zeros(*shape: int) -> Any:
        return np.zeros(shape, dtype=np.float32)

    n_embd, n_ff, n_kv = recipe.n_embd, recipe.n_ff, recipe.n_head_kv * head_dim
    embd = random(n_vocab, n_embd, scale=1.0 if deterministic else 0.02)
    writer.add_tensor("token_embd.weight", embd)
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    # Row j of output holds embedding j-1: the logit of j peaks when the hidden state is embedding j-1.
    output = np.roll(embd, 1, axis=0) if deterministic else random(n_vocab, n_embd)
    writer.add_tensor("output.weight", output)
    out_proj = zeros if deterministic else random
    for i in range(recipe.n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", random(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", random(n_kv, n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", random(n_kv, n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", out_proj(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", random(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", random(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", out_proj(n_embd, n_ff))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
