#!/usr/bin/env bash
# call 5 (session 12): GPU suite, then the slow property test x3 (hypothesis seeds 11-13) beside the errors
# report (accuracy only: it may share the GPU), then the N4k/N16k causal bench alone
R=$OUT; C=$1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export TRITON_CACHE_DIR=/tmp/tcache PYTHONUNBUFFERED=1 PYTHONPATH=src:/tmp/site ENTFLASH_COMMIT=$C
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $ENTFLASH_COMMIT"; } | tee $R/env.txt
echo "=== tests $(date -u +%T)"
timeout 330 python3 -m pytest -m "gpu and not slow" -q -rf -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -5 | tee $R/gpu_tests.txt
echo "=== property x3 + errors $(date -u +%T)"
for s in 11 12 13; do
  (timeout 200 python3 -m pytest -m "gpu and slow" -q -rf -p no:cacheprovider tests/test_gpu.py --hypothesis-seed=$s > /tmp/prop_$s.txt 2>&1; echo "seed $s exit $?" >> /tmp/prop_$s.txt) &
done
timeout 200 python3 -m entflash.bench --errors --out $R/errors.jsonl > $R/errors.txt 2>&1
wait
cat /tmp/prop_*.txt > $R/gpu_property.txt; grep -h "passed\|failed\|exit" /tmp/prop_*.txt; tail -15 $R/errors.txt
echo "=== bench $(date -u +%T)"
timeout 120 python3 -m entflash.bench --d 64 128 --n 4096 16384 --causal yes --inputs clustered random --methods entflash sdpa_cudnn adasplash_v2 --out $R/bench.jsonl 2>&1 | grep -v '^{' | tee $R/bench.txt
echo "=== done $(date -u +%T)"
