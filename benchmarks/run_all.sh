#!/usr/bin/env bash
# Every benchmark, one after the other; results (markdown + PNG) in benchmarks/results/:
#   primitives   tokenize/embed vs llama-cpp-python and sentence-transformers (run.sh)
#   server       portable wheel vs native build, start-up, roofline (bench_server.py)
#   concurrency  1/4/8 streaming clients vs llama-cpp-python's server (bench_concurrency.py; Q4_0 and Q8_0)
#   rpc          local vs split over two RPC workers (bench_rpc.py), where the installed llama-serve has RpcWorker
# The peers' venv (.bench/lcp) is made on first use by setup_peers.sh.
#   bash benchmarks/run_all.sh     # PY=<python of a venv with llama-serve[test]> (default: .venv-test of scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PY:-.venv-test/bin/python}"
[ -x .bench/lcp/bin/python ] || bash benchmarks/setup_peers.sh .bench/lcp
PY="$py" bash benchmarks/run.sh
"$py" benchmarks/bench_server.py
"$py" benchmarks/bench_chat.py
"$py" benchmarks/bench_concurrency.py --peer-python .bench/lcp/bin/python
"$py" benchmarks/bench_concurrency.py --peer-python .bench/lcp/bin/python --quant Q8_0 \
    --out benchmarks/results/concurrency-q8_0.md
if "$py" -c 'import llama_serve; llama_serve.RpcWorker' 2>/dev/null; then
    "$py" benchmarks/bench_rpc.py
fi
