#!/usr/bin/env bash
# run 49: (1) per-kernel f+b profile entflash vs AdaSplash-2 (random, D64 N4k / D128 N16k) (2) ncu on the
# backward kernels (3) branch wip/general-lg2 (br/lg2): the two suite tests run 48 did not reach, the slow
# property test, test_kernels.py -k alpha on the GPU, τ precision near α = 1 (main and branch)
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tcache
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $ENTFLASH_COMMIT (main); br/lg2 = wip/general-lg2 78fe1a4 (rebased on main 2023290)"; } | tee $OUT/env.txt
t0=$(date +%s); st() { echo "$1 $(( $(date +%s) - t0 )) s" | tee -a $OUT/times.txt; }
PYTHONPATH=src:/tmp/site timeout 150 python3 benchmarks/kernel_profile.py > $OUT/kernel_profile.txt 2>&1; st profile
PYTHONPATH=src:/tmp/site timeout 150 ncu --clock-control none --profile-from-start off \
  --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats --section SchedulerStats \
  -k regex:"dq_kernel|dkdv_kernel|_bwd_q_kernel|_bwd_kv_kernel" \
  python3 benchmarks/kernel_profile.py --ncu 64 4096 8 random > $OUT/ncu.txt 2>&1; st ncu
(cd br/lg2 && PYTHONPATH=src timeout 100 python3 -m pytest -m "gpu and not slow" -q -rf -p no:cacheprovider tests/test_gpu.py -k "alpha_one_dispatch or nan_inputs" > $OUT/lg2_suite_rest.txt 2>&1); st lg2_rest
(cd br/lg2 && PYTHONPATH=src timeout 170 python3 -m pytest -m "gpu and slow" -q -rf -p no:cacheprovider tests/test_gpu.py > $OUT/lg2_property.txt 2>&1); st lg2_property
(cd br/lg2 && PYTHONPATH=src timeout 100 python3 -m pytest -q -rf -p no:cacheprovider tests/test_kernels.py -k alpha > $OUT/lg2_kernels_alpha.txt 2>&1); st lg2_alpha
PYTHONPATH=br/lg2/src timeout 60 python3 br/tau_prec.py > $OUT/tau_prec_lg2.txt 2>&1; st prec_lg2
PYTHONPATH=src timeout 60 python3 br/tau_prec.py > $OUT/tau_prec_main.txt 2>&1; st prec_main
cp br/run49.sh br/tau_prec.py $OUT/
