#!/usr/bin/env bash
# call 2 (session 13): dq over whole tiles vs halves (stage_times.py dqfull) on main
R=$OUT
export TRITON_CACHE_DIR=/tmp/tcache PYTHONUNBUFFERED=1 PYTHONPATH=src
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $1"; } | tee $R/env.txt
echo "=== dqfull $(date -u +%T)"
timeout 400 python3 benchmarks/stage_times.py dqfull 2>&1 | tee $R/stage_times_dqfull.txt
echo "=== done $(date -u +%T)"
