#!/usr/bin/env bash
# call 3 (session 12): the slow GPU property test as three processes with different hypothesis seeds (its time is
# kernel compilation, serial within a process: 16 cores compile three at once), then the N4k/N16k causal bench
R=$OUT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export TRITON_CACHE_DIR=/tmp/tcache PYTHONUNBUFFERED=1 PYTHONPATH=src:/tmp/site ENTFLASH_COMMIT=9730ca8
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $ENTFLASH_COMMIT"; } | tee $R/env.txt
echo "=== property x3 $(date -u +%T)"
for s in 1 2 3; do
  (timeout 380 python3 -m pytest -m "gpu and slow" -q -rf -p no:cacheprovider tests/test_gpu.py --hypothesis-seed=$s > $R/gpu_property_seed$s.txt 2>&1; echo "exit $?" >> $R/gpu_property_seed$s.txt) &
done
wait
tail -n 3 $R/gpu_property_seed*.txt
echo "=== bench $(date -u +%T)"
timeout 170 python3 -m entflash.bench --d 64 128 --n 4096 16384 --causal yes --inputs clustered random --methods entflash sdpa_cudnn adasplash_v2 --out $R/bench.jsonl 2>&1 | grep -v '^{' | tee $R/bench.txt
echo "=== done $(date -u +%T)"
