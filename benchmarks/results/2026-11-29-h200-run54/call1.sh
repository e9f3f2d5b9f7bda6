#!/usr/bin/env bash
# call 1 (session 12): wip/dq-split timing (branch tree br/dq) + main's N4k clustered and D128 N64k random rows
R=$OUT; mkdir -p /tmp/o
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export TRITON_CACHE_DIR=/tmp/tcache PYTHONUNBUFFERED=1
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; } | tee $R/env.txt
echo "=== dqsplit (8314e09) $(date -u +%T)"
(cd br/dq && PYTHONPATH=src timeout 280 python3 benchmarks/stage_times.py dqsplit 2>&1 | tee $R/stage_times_dqsplit.txt)
echo "=== bench main fe7d946 $(date -u +%T)"
export PYTHONPATH=src:/tmp/site ENTFLASH_COMMIT=fe7d946
timeout 120 python3 -m entflash.bench --d 64 --n 4096 --causal yes --inputs clustered random --methods entflash sdpa_cudnn adasplash_v2 --out $R/bench_n4k.jsonl 2>&1 | tail -20 | tee $R/bench_n4k.txt
timeout 150 python3 -m entflash.bench --d 128 --n 65536 --causal yes --inputs random --methods entflash sdpa_cudnn adasplash_v2 --out $R/bench_n64k.jsonl 2>&1 | tail -20 | tee $R/bench_n64k.txt
echo "=== done $(date -u +%T)"
