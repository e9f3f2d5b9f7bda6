#!/usr/bin/env bash
# One device call: the steps named in $1 (space-separated, in order), everything written under $OUT.
# usage (on the device machine, repo root): bash benchmarks/gpu_run.sh "bench stages tests property long sanitize errors" [bench args]
#   tests     pytest -m "gpu and not slow" (test_gpu.py)  -> gpu_tests.txt
#   ptests    the same suite as four pytest processes at once (-k groups covering its 33 tests once each; they
#             compile on separate cores: a cold cache took the one-process suite past 320 s in run 61)
#             -> gpu_tests_<n>.txt
#   property  the slow GPU tests (hypothesis property test) -> gpu_property.txt
#   bench     python -m entflash.bench [bench args]      -> bench.jsonl, bench.txt
#   stages    benchmarks/stage_times.py $STAGES_ARGS    -> stage_times.txt  (STAGES_ARGS: fwd | bwd | bwdall | dqone | dkdv | dkdvw | dqsplit | fwdsplit | tausplit | dqfull | pipes | "n 4096" | "alpha 1.3" | maxnreg | rowgroup | occupancy)
#   long      benchmarks/long_context.py (N = 262144)    -> long_context.txt
#   sanitize  compute-sanitizer memcheck + racecheck on benchmarks/sanitize.py -> sanitize_*.txt
#   errors    python -m entflash.bench --errors          -> errors.jsonl, errors.txt
#   sweepcost benchmarks/sweep_cost.py (price of a per-tile reduction) -> sweep_cost.txt
#   taulaunch benchmarks/tau_launches.py (per-launch times of the split tau pass) -> tau_launches.txt
#   regcap    benchmarks/regcap_probe.py (backward under dq register caps) -> regcap_probe.txt
#   launch    benchmarks/launch_sweep.py (per-kernel num_warps/num_stages) -> launch_sweep.jsonl, .txt
# TCACHE_SAVE=1: also return Triton's cache as $OUT/tcache.tgz (see below; a carried ./.tcache.tgz starts warm).
# Pass ENTFLASH_COMMIT=<hash of the working tree> in the command: the device copy's git HEAD can be stale
# (run 5 recorded an older commit that way).
set -o pipefail
steps=${1:-"tests bench"}; shift || true
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=src:/tmp/site
else
  export PYTHONPATH=src
fi
export PYTHONUNBUFFERED=1 ENTFLASH_COMMIT=${ENTFLASH_COMMIT:-unknown}
# Triton's compiled kernels and autotuning results (entflash's and AdaSplash's) kept between calls: a
# .tcache.tgz in the checkout (ignored; name it in `carry`) is unpacked into the cache, and with TCACHE_SAVE=1
# the cache is packed into $OUT/tcache.tgz after the steps (one file: what comes back must be at most two
# folders deep). Without the file every call compiles and autotunes from scratch, as before.
export TRITON_CACHE_DIR=/tmp/tcache TRITON_CACHE_AUTOTUNING=1
mkdir -p "$TRITON_CACHE_DIR"
if [ -f .tcache.tgz ]; then tar -xzf .tcache.tgz -C "$TRITON_CACHE_DIR" && echo "triton cache: $(find "$TRITON_CACHE_DIR" -type f | wc -l) files from .tcache.tgz"; fi
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; echo "commit $ENTFLASH_COMMIT"; } | tee "$OUT/env.txt"
for step in $steps; do
  echo "=== $step $(date -u +%T)"
  case $step in
    tests) timeout ${TEST_TIMEOUT:-300} python3 -m pytest -m "gpu and not slow" -q -rf -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt" ;;
    ptests)
      groups=("dtypes_against and True" "dtypes_against and False"
              "alphas or negative_and_zero or long_sequence or deterministic"
              "not dtypes_against and not alphas and not negative_and_zero and not long_sequence and not deterministic")
      for i in "${!groups[@]}"; do
        (timeout ${TEST_TIMEOUT:-300} python3 -m pytest -m "gpu and not slow" -q -rf -p no:cacheprovider tests/test_gpu.py \
           -k "${groups[$i]}" > "$OUT/gpu_tests_$i.txt" 2>&1; echo "group $i (${groups[$i]}) exit $?" >> "$OUT/gpu_tests_$i.txt") &
      done
      wait; tail -n 2 "$OUT"/gpu_tests_*.txt ;;
    property) timeout ${PROP_TIMEOUT:-330} python3 -m pytest -m "gpu and slow" -q -rf -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_property.txt" ;;
    bench) timeout ${BENCH_TIMEOUT:-300} python3 -m entflash.bench --out "$OUT/bench.jsonl" "$@" 2>&1 | tee "$OUT/bench.txt" ;;
    stages) timeout ${STAGES_TIMEOUT:-120} python3 benchmarks/stage_times.py ${STAGES_ARGS:-} 2>&1 | tee "$OUT/stage_times.txt" ;;
    long) timeout ${LONG_TIMEOUT:-240} python3 benchmarks/long_context.py 2>&1 | tee "$OUT/long_context.txt" ;;
    sanitize)
      timeout ${FILL_TIMEOUT:-120} python3 benchmarks/sanitize.py > /dev/null 2>&1  # fill Triton's cache outside the sanitizer
      for tool in ${SAN_TOOLS:-memcheck racecheck}; do
        { echo "\$ compute-sanitizer --tool $tool python3 benchmarks/sanitize.py"; compute-sanitizer --version | tail -1;
          PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout ${SAN_TIMEOUT:-150} compute-sanitizer --tool $tool python3 benchmarks/sanitize.py; echo "exit $?"; } 2>&1 | tee "$OUT/sanitize_$tool.txt"
      done ;;
    errors) timeout ${ERR_TIMEOUT:-240} python3 -m entflash.bench --errors --out "$OUT/errors.jsonl" 2>&1 | tee "$OUT/errors.txt" ;;
    launch) timeout ${LAUNCH_TIMEOUT:-300} python3 benchmarks/launch_sweep.py "$OUT/launch_sweep.jsonl" 2>&1 | tee "$OUT/launch_sweep.txt" ;;
    taulaunch) timeout ${TAUL_TIMEOUT:-120} python3 benchmarks/tau_launches.py 2>&1 | tee "$OUT/tau_launches.txt" ;;
    regcap) timeout ${REGCAP_TIMEOUT:-150} python3 benchmarks/regcap_probe.py 2>&1 | tee "$OUT/regcap_probe.txt" ;;
    sweepcost) timeout ${SWEEP_TIMEOUT:-120} python3 benchmarks/sweep_cost.py 2>&1 | tee "$OUT/sweep_cost.txt" ;;
    *) echo "unknown step $step" ;;
  esac
done
# the compared libraries' autotuning choices the bench recorded (bench/autotune_cache.py): commit them under
# benchmarks/autotune/ so that later sweeps restore instead of re-tuning
cp benchmarks/autotune/*.json "$OUT/" 2>/dev/null || true
if [ "${TCACHE_SAVE:-0}" = 1 ]; then
  tar -czf "$OUT/tcache.tgz" -C "$TRITON_CACHE_DIR" . && ls -l "$OUT/tcache.tgz"
fi
