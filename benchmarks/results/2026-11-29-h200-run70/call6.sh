#!/usr/bin/env bash
# call 6 (session 14): the general-α τ step fix (last Halley step judged as a difference) and dk/dv relative to
# the row maxima for float32 only: the GPU suite (ptests) beside the slow property test (hypothesis seed 32, with
# its failing case as an explicit example), then the general-α stage times (stage_times.py alpha 1.3)
R=$OUT; C=$1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export TRITON_CACHE_DIR=/tmp/tcache PYTHONUNBUFFERED=1 PYTHONPATH=src:/tmp/site ENTFLASH_COMMIT=$C
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $ENTFLASH_COMMIT"; } | tee $R/env.txt
echo "=== ptests + property seed 32 $(date -u +%T)"
(timeout 230 python3 -m pytest -m "gpu and slow" -q -rf -p no:cacheprovider tests/test_gpu.py --hypothesis-seed=32 > $R/gpu_property_seed32.txt 2>&1; echo "seed 32 exit $?" >> $R/gpu_property_seed32.txt) &
TEST_TIMEOUT=230 OUT=$R bash benchmarks/gpu_run.sh ptests > /dev/null 2>&1
wait
cat $R/gpu_tests_*.txt > $R/gpu_tests.txt; rm -f $R/gpu_tests_*.txt
grep -h "passed\|failed\|exit\|Error" $R/gpu_tests.txt $R/gpu_property_seed32.txt | head -20
echo "=== alpha 1.3 $(date -u +%T)"
timeout 70 python3 benchmarks/stage_times.py alpha 1.3 2>&1 | tee $R/stage_times_alpha13.txt
echo "=== done $(date -u +%T)"
