#!/usr/bin/env bash
# run 51: the mask / dk/dv FMA change (main vs br/old = 0c6355a in the same call): backward stage times, then
# the full sweep (bench --skip-slow) on the new kernels
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/tcache ENTFLASH_COMMIT
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $ENTFLASH_COMMIT; br/old = 0c6355a"; } > $OUT/env.txt
t0=$(date +%s); st() { echo "$1 $(( $(date +%s) - t0 )) s" >> $OUT/times.txt; }
{ echo "== old (0c6355a)"; PYTHONPATH=br/old/src timeout 70 python3 benchmarks/stage_times.py bwdall; echo "== new ($ENTFLASH_COMMIT)"; PYTHONPATH=src timeout 70 python3 benchmarks/stage_times.py bwdall; } > $OUT/stage_times_bwdall.txt 2>&1; st stages
PYTHONPATH=src:/tmp/site timeout 380 python3 -m entflash.bench --skip-slow --budget-s 360 --out $OUT/bench.jsonl > $OUT/bench.txt 2>&1; st bench
cp br/run51.sh $OUT/
