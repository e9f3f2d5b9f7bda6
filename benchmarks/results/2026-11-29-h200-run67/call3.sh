#!/usr/bin/env bash
# call 3 (session 14): the GPU suite (gpu_run.sh ptests: four processes) and the slow property test with
# hypothesis seeds 31-33, all at once on a cold cache, on main after the bound-set knobs were merged
R=$OUT; C=$1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export TRITON_CACHE_DIR=/tmp/tcache PYTHONUNBUFFERED=1 PYTHONPATH=src:/tmp/site ENTFLASH_COMMIT=$C
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $ENTFLASH_COMMIT"; } | tee $R/env.txt
echo "=== ptests + property x3 $(date -u +%T)"
for s in 31 32 33; do
  (timeout 330 python3 -m pytest -m "gpu and slow" -q -rf -p no:cacheprovider tests/test_gpu.py --hypothesis-seed=$s > $R/gpu_property_seed$s.txt 2>&1; echo "seed $s exit $?" >> $R/gpu_property_seed$s.txt) &
done
TEST_TIMEOUT=330 OUT=$R bash benchmarks/gpu_run.sh ptests > /dev/null 2>&1
wait
tail -n 2 $R/gpu_tests_*.txt; grep -h "passed\|failed\|exit" $R/gpu_property_seed*.txt
echo "=== done $(date -u +%T)"
