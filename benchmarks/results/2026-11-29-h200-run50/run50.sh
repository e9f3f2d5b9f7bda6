#!/usr/bin/env bash
# run 50: ū from the forward (config.DQ_UBAR): stage times of the variants, per-kernel f+b profile against
# AdaSplash-2, the GPU tests most exposed to the change, τ precision near α = 1 (lg2 merged in 7ce4774)
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tcache PYTHONPATH=src:/tmp/site
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $ENTFLASH_COMMIT"; } > $OUT/env.txt
t0=$(date +%s); st() { echo "$1 $(( $(date +%s) - t0 )) s" >> $OUT/times.txt; }
timeout 130 python3 -m pytest -m "gpu and not slow" -q -rf -p no:cacheprovider tests/test_gpu.py -k "memory or compile or graph or deterministic or dtypes" > $OUT/gpu_subset.txt 2>&1; st subset
timeout 260 python3 benchmarks/stage_times.py ubar > $OUT/stage_times_ubar.txt 2>&1; st stages
timeout 100 python3 benchmarks/kernel_profile.py > $OUT/kernel_profile.txt 2>&1; st profile
timeout 50 python3 br/tau_prec.py > $OUT/tau_prec.txt 2>&1; st prec
cp br/run50.sh $OUT/
