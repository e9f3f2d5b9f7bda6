#!/usr/bin/env bash
# One device call: GPU suite + benchmark, everything written under $OUT.
# usage (on the device machine, repo root): bash benchmarks/gpu_run.sh [tests|bench|errors|all] [extra bench args]
set -o pipefail
what=${1:-all}; shift || true
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=src:/tmp/site
else
  export PYTHONPATH=src
fi
export PYTHONUNBUFFERED=1 ENTFLASH_COMMIT=${ENTFLASH_COMMIT:-unknown}
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; } | tee "$OUT/env.txt"
if [ "$what" = tests ] || [ "$what" = all ]; then
  timeout ${TEST_TIMEOUT:-300} python3 -m pytest -m gpu -q -rf -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  timeout ${BENCH_TIMEOUT:-300} python3 -m entflash.bench --out "$OUT/bench.jsonl" "$@" 2>&1 | tee "$OUT/bench.txt"
fi
if [ "$what" = errors ] || [ "$what" = all ]; then
  timeout 120 python3 -m entflash.bench --errors --out "$OUT/errors.jsonl" 2>&1 | tee "$OUT/errors.txt"
fi
