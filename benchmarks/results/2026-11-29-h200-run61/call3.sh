#!/usr/bin/env bash
# call 3 (session 13): GPU suite, the slow property test x3 (hypothesis seeds 21-23, in parallel on the warm
# cache), then the errors report alone
R=$OUT; C=$1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export TRITON_CACHE_DIR=/tmp/tcache PYTHONUNBUFFERED=1 PYTHONPATH=src:/tmp/site ENTFLASH_COMMIT=$C
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $ENTFLASH_COMMIT"; } | tee $R/env.txt
echo "=== tests $(date -u +%T)"
timeout 320 python3 -m pytest -m "gpu and not slow" -q -rf -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -8 | tee $R/gpu_tests.txt
echo "=== property x3 $(date -u +%T)"
for s in 21 22 23; do
  (timeout 170 python3 -m pytest -m "gpu and slow" -q -rf -p no:cacheprovider tests/test_gpu.py --hypothesis-seed=$s > /tmp/prop_$s.txt 2>&1; echo "seed $s exit $?" >> /tmp/prop_$s.txt) &
done
wait
cat /tmp/prop_*.txt > $R/gpu_property.txt; grep -h "passed\|failed\|exit" /tmp/prop_*.txt
echo "=== errors $(date -u +%T)"
timeout 90 python3 -m entflash.bench --errors --out $R/errors.jsonl > $R/errors.txt 2>&1; tail -12 $R/errors.txt
echo "=== done $(date -u +%T)"
