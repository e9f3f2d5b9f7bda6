#!/usr/bin/env bash
# run 47: general α (1.3) against cuDNN and AdaSplash-2 in one bench call, and the split τ pass's launches at α 1.3
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tcache ENTFLASH_COMMIT
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $ENTFLASH_COMMIT"; } > "$OUT/env.txt" 2>&1
t0=$(date +%s); st() { echo "$1 $(( $(date +%s)-t0 )) s" >> "$OUT/times.txt"; }
PYTHONPATH=src:/tmp/site timeout 200 python3 -m entflash.bench --d 64 --n 16384 --causal yes --alpha 1.3 --methods entflash sdpa_cudnn adasplash_v2 --out "$OUT/bench_alpha13.jsonl" > "$OUT/bench_alpha13.txt" 2>&1; st bench
cp benchmarks/autotune/*.json "$OUT/" 2>/dev/null
PYTHONPATH=src timeout $(( 330 - $(date +%s) + t0 )) python3 benchmarks/tau_launches.py --alpha 1.3 random > "$OUT/tau_launches_alpha13.txt" 2>&1; st launches
cat "$OUT/times.txt"
