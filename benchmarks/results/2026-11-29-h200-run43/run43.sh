#!/usr/bin/env bash
# run 43: dα on GPU for main and branch next/dalpha-regs (exported into br/src), cost, D128 dq one vs two sweeps
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tcache
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit main $ENTFLASH_COMMIT branch $BRANCH_COMMIT"; } > "$OUT/env.txt" 2>&1
t0=$(date +%s)
PYTHONPATH=src timeout 120 python3 -m pytest -rf --runxfail -p no:cacheprovider tests/test_kernels.py -k dalpha > "$OUT/dalpha_tests_main.txt" 2>&1; echo "main tests $(( $(date +%s)-t0 )) s" >> "$OUT/times.txt"
PYTHONPATH=br/src timeout 120 python3 -m pytest -rf --runxfail -p no:cacheprovider br/tests/test_kernels.py -k dalpha > "$OUT/dalpha_tests_branch.txt" 2>&1; echo "branch tests $(( $(date +%s)-t0 )) s" >> "$OUT/times.txt"
PYTHONPATH=src timeout 60 python3 br/diag_dalpha.py 8 > "$OUT/diag_main.txt" 2>&1
PYTHONPATH=br/src timeout 60 python3 br/diag_dalpha.py 8 > "$OUT/diag_branch.txt" 2>&1; echo "diag $(( $(date +%s)-t0 )) s" >> "$OUT/times.txt"
PYTHONPATH=src timeout 90 python3 benchmarks/dalpha_cost.py > "$OUT/dalpha_cost_main.txt" 2>&1
PYTHONPATH=br/src timeout 90 python3 benchmarks/dalpha_cost.py > "$OUT/dalpha_cost_branch.txt" 2>&1; echo "cost $(( $(date +%s)-t0 )) s" >> "$OUT/times.txt"
PYTHONPATH=src timeout 150 python3 benchmarks/stage_times.py dqone 128 > "$OUT/stage_times_dqone128.txt" 2>&1; echo "stages $(( $(date +%s)-t0 )) s" >> "$OUT/times.txt"
