#!/usr/bin/env bash
# call 2 (session 14): stage_times.py bounds2 on branch s14-topk (pass-1 bound-set knobs; defaults = main's kernels)
R=$OUT
export TRITON_CACHE_DIR=/tmp/tcache PYTHONUNBUFFERED=1 PYTHONPATH=src
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $1"; } | tee $R/env.txt
echo "=== bounds2 $(date -u +%T)"
timeout 400 python3 benchmarks/stage_times.py bounds2 2>&1 | tee $R/stage_times_bounds2.txt
echo "=== done $(date -u +%T)"
