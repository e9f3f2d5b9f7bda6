#!/usr/bin/env bash
# run 48: branch wip/general-lg2: stage times at α 1.3, then the GPU suite
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tcache
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $ENTFLASH_COMMIT"; } > "$OUT/env.txt" 2>&1
t0=$(date +%s); st() { echo "$1 $(( $(date +%s)-t0 )) s" >> "$OUT/times.txt"; }
PYTHONPATH=src timeout 50 python3 benchmarks/stage_times.py alpha 1.3 > "$OUT/stages_alpha13.txt" 2>&1; st stages
PYTHONPATH=src timeout $(( 360 - $(date +%s) + t0 )) python3 -m pytest -m "gpu and not slow" -q -rf -p no:cacheprovider tests/test_gpu.py > "$OUT/gpu_tests.txt" 2>&1; st gpu_tests
cat "$OUT/times.txt"
