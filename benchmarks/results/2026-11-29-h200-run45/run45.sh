#!/usr/bin/env bash
# run 45: where a per-head α's price goes (dalpha_cost --split), then the slow GPU property test
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tcache
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $ENTFLASH_COMMIT"; } > "$OUT/env.txt" 2>&1
t0=$(date +%s); st() { echo "$1 $(( $(date +%s)-t0 )) s" >> "$OUT/times.txt"; }
PYTHONPATH=src timeout 120 python3 benchmarks/dalpha_cost.py --split > "$OUT/dalpha_cost.txt" 2>&1; st cost
PYTHONPATH=src timeout $(( 585 - $(date +%s) + t0 )) python3 -m pytest -m "gpu and slow" -q -rf -p no:cacheprovider tests/test_gpu.py > "$OUT/gpu_property.txt" 2>&1; st property
cat "$OUT/times.txt"
