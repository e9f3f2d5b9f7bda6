#!/usr/bin/env bash
# run 44: main with dα in covariance form + log2_fine; br/old = d55247a for the cost comparison
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tcache
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $ENTFLASH_COMMIT (old: d55247a in br/old)"; } > "$OUT/env.txt" 2>&1
t0=$(date +%s); st() { echo "$1 $(( $(date +%s)-t0 )) s" >> "$OUT/times.txt"; }
PYTHONPATH=src timeout 100 python3 -m pytest -rf -p no:cacheprovider tests/test_kernels.py -k alpha > "$OUT/alpha_tests.txt" 2>&1; st alpha_tests
PYTHONPATH=src timeout 60 python3 br/diag_dalpha.py 8 > "$OUT/diag.txt" 2>&1; st diag
PYTHONPATH=src timeout 100 python3 benchmarks/dalpha_cost.py --split > "$OUT/dalpha_cost_new.txt" 2>&1; st cost_new
PYTHONPATH=br/old/src timeout 100 python3 benchmarks/dalpha_cost.py --split > "$OUT/dalpha_cost_old.txt" 2>&1; st cost_old
PYTHONPATH=src timeout $(( 575 - $(date +%s) + t0 )) python3 -m pytest -m "gpu and not slow" -q -rf -p no:cacheprovider tests/test_gpu.py > "$OUT/gpu_tests.txt" 2>&1; st gpu_tests
cat "$OUT/times.txt"
