#!/usr/bin/env bash
# call 1 (session 13): τ split timing on main (stage_times.py tausplit) + D128 N64k causal random vs AdaSplash-2
R=$OUT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export TRITON_CACHE_DIR=/tmp/tcache PYTHONUNBUFFERED=1 PYTHONPATH=src:/tmp/site ENTFLASH_COMMIT=dd547c7
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit dd547c7"; } | tee $R/env.txt
echo "=== tausplit $(date -u +%T)"
timeout 200 python3 benchmarks/stage_times.py tausplit 2>&1 | tee $R/stage_times_tausplit.txt
echo "=== bench n64k $(date -u +%T)"
timeout 200 python3 -m entflash.bench --d 128 --n 65536 --causal yes --inputs random --methods entflash sdpa_cudnn adasplash_v2 --out $R/bench_n64k.jsonl 2>&1 | tail -12 | tee $R/bench_n64k.txt
echo "=== done $(date -u +%T)"
