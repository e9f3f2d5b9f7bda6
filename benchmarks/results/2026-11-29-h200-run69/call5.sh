#!/usr/bin/env bash
# call 5 (session 14): dk/dv relative to the row maxima — stage_times.py dkdvrel (alone), then the GPU suite
# (ptests) beside the slow property test (hypothesis seed 32, with its failing case now an explicit example),
# then the D64/D128 N4k/N16k causal bench rows of entflash, cuDNN and AdaSplash-2
R=$OUT; C=$1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export TRITON_CACHE_DIR=/tmp/tcache PYTHONUNBUFFERED=1 PYTHONPATH=src:/tmp/site ENTFLASH_COMMIT=$C
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $ENTFLASH_COMMIT"; } | tee $R/env.txt
echo "=== dkdvrel $(date -u +%T)"
timeout 120 python3 benchmarks/stage_times.py dkdvrel 2>&1 | tee $R/stage_times_dkdvrel.txt
echo "=== ptests + property seed 32 $(date -u +%T)"
(timeout 250 python3 -m pytest -m "gpu and slow" -q -rf -p no:cacheprovider tests/test_gpu.py --hypothesis-seed=32 > $R/gpu_property_seed32.txt 2>&1; echo "seed 32 exit $?" >> $R/gpu_property_seed32.txt) &
TEST_TIMEOUT=250 OUT=$R bash benchmarks/gpu_run.sh ptests > /dev/null 2>&1
wait
cat $R/gpu_tests_*.txt > $R/gpu_tests.txt; rm -f $R/gpu_tests_*.txt
grep -h "passed\|failed\|exit\|Error" $R/gpu_tests.txt $R/gpu_property_seed32.txt | head -20
echo "=== bench $(date -u +%T)"
timeout 170 python3 -m entflash.bench --d 64 128 --n 4096 16384 --causal yes --methods entflash sdpa_cudnn adasplash_v2 --budget-s 150 --out $R/bench.jsonl > $R/bench.txt 2>&1; echo "bench exit $?"; tail -30 $R/bench.txt
echo "=== done $(date -u +%T)"
