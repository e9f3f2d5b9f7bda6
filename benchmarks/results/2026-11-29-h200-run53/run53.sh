#!/usr/bin/env bash
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tcache
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $ENTFLASH_COMMIT"; } > $OUT/env.txt
t0=$(date +%s); st() { echo "$1 $(( $(date +%s) - t0 )) s" >> $OUT/times.txt; }
PYTHONPATH=src timeout 345 python3 -m pytest -m "gpu and not slow" -q -rf -p no:cacheprovider tests/test_gpu.py > $OUT/gpu_tests.txt 2>&1; st tests
PYTHONPATH=src timeout 130 python3 -m pytest -m "gpu and slow" -q -rf -p no:cacheprovider tests/test_gpu.py > $OUT/gpu_property.txt 2>&1; st property
PYTHONPATH=src:/tmp/site timeout 90 python3 -m entflash.bench --d 64 128 --n 4096 16384 --causal yes --methods entflash sdpa_cudnn adasplash_v2 --out $OUT/bench.jsonl > $OUT/bench.txt 2>&1; st bench
cp br/run53.sh $OUT/
