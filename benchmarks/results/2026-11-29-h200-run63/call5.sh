#!/usr/bin/env bash
# call 5 (session 13): stage_times.py pipes (output / dk/dv at 3 stages, gathering from sweep 1) on main
R=$OUT
export TRITON_CACHE_DIR=/tmp/tcache PYTHONUNBUFFERED=1 PYTHONPATH=src
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $1"; } | tee $R/env.txt
echo "=== pipes $(date -u +%T)"
timeout 220 python3 benchmarks/stage_times.py pipes 2>&1 | tee $R/stage_times_pipes.txt
echo "=== done $(date -u +%T)"
