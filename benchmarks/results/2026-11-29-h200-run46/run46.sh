#!/usr/bin/env bash
# run 46: general-α τ start (top_bound_general) + one reciprocal per score in the τ sweeps; br/old = HEAD before
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tcache
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $ENTFLASH_COMMIT (old: $OLD_COMMIT in br/old)"; } > "$OUT/env.txt" 2>&1
t0=$(date +%s); st() { echo "$1 $(( $(date +%s)-t0 )) s" >> "$OUT/times.txt"; }
PYTHONPATH=src timeout 100 python3 -m pytest -rf -p no:cacheprovider tests/test_kernels.py -k "alpha or general" > "$OUT/alpha_tests.txt" 2>&1; st alpha_tests
PYTHONPATH=br/old/src timeout 90 python3 benchmarks/stage_times.py alpha 1.3 > "$OUT/stages_alpha13_old.txt" 2>&1; st stages_old
PYTHONPATH=src timeout 90 python3 benchmarks/stage_times.py alpha 1.3 > "$OUT/stages_alpha13_new.txt" 2>&1; st stages_new
PYTHONPATH=src timeout 60 python3 benchmarks/dalpha_cost.py --split > "$OUT/dalpha_cost.txt" 2>&1; st cost
PYTHONPATH=src timeout $(( 560 - $(date +%s) + t0 )) python3 -m pytest -m "gpu and not slow" -q -rf -p no:cacheprovider tests/test_gpu.py > "$OUT/gpu_tests.txt" 2>&1; st gpu_tests
cat "$OUT/times.txt"
