#!/usr/bin/env bash
# call 4 (session 13): the three GPU-suite tests run 61's time limit cut, then the full sweep with plots
R=$OUT; C=$1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export TRITON_CACHE_DIR=/tmp/tcache PYTHONUNBUFFERED=1 PYTHONPATH=src:/tmp/site ENTFLASH_COMMIT=$C
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $ENTFLASH_COMMIT"; } | tee $R/env.txt
echo "=== tests $(date -u +%T)"
timeout 150 python3 -m pytest -m "gpu and not slow" -q -rf -p no:cacheprovider tests/test_gpu.py -k "memory_fwd_bwd or alpha_one_dispatch or nan_inputs" 2>&1 | tail -5 | tee $R/gpu_tests_rest.txt
echo "=== sweep $(date -u +%T)"
timeout 420 python3 -m entflash.bench --skip-slow --budget-s 330 --out $R/bench.jsonl > $R/bench.txt 2>&1; echo "bench exit $?"; tail -12 $R/bench.txt
echo "=== done $(date -u +%T)"
