#!/usr/bin/env bash
# One device call: the steps named in $1 (space-separated, in order; steps joined by '+' run side by side, e.g.
# "examples+trained bench": the examples train beside the bench model, then the bench runs alone), every output
# written under $OUT.
#
#   bash benchmarks/gpu_run.sh "tests bench errors" [bench args...]      (on the GPU machine, repo root)
#
#   tests     the GPU suite (the gpu-marked tests, and the CPU tests of masks, dropout and the transformers
#             integration, which run on CUDA when it is there; $GPU_TESTS) as $TEST_PROCS (8) pytest processes that
#             compile on separate cores (a cold Triton cache makes one process spend minutes compiling; four
#             processes needed more than 390 s each)                                -> gpu_tests.txt
#   property  the slow GPU tests (hypothesis property test)                      -> gpu_property.txt
#   bench     python -m entflash.bench [bench args]                              -> bench.jsonl, bench.txt
#   errors    python -m entflash.bench --errors                                  -> errors.jsonl, errors.txt
#   stages    benchmarks/stage_times.py $STAGES_ARGS                             -> stage_times.txt
#   long      benchmarks/long_context.py                                         -> long_context.txt
#   sanitize  compute-sanitizer memcheck and racecheck on benchmarks/sanitize.py -> sanitize_<tool>.txt
#   examples  examples/run_full.sh $EXAMPLES (results, plots and logs, no checkpoints) -> examples.tgz
#   steptime  examples/train_lm.py's training step times, entmax against sdpa, at $SPEED_LENGTHS (8192 16384)
#             tokens with the GPU to itself                                        -> step_time.txt
#   trained   python -m entflash.bench.trained: the bench's trained model         -> trained_lm.tgz, trained.txt
#
# Wheels in ./.whl (e.g. adasplash, for the side-by-side rows) are installed first. Set ENTFLASH_COMMIT to the
# working tree's commit: the device copy's git metadata may be stale. TCACHE_SAVE=1 returns Triton's cache as
# $OUT/tcache.tgz; a carried ./.tcache.tgz starts the next call warm. PACK=1 leaves one archive, $OUT/out.tgz, of
# everything written (a device call returns at most eight files), refreshed after every step: a call stopped at
# its time limit still returns what its finished steps wrote.
set -o pipefail
case "${1:-}" in -h|--help) sed -n "2,27p" "$0"; exit 0 ;; esac
steps=${1:-"tests bench"}; shift || true
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
# PACK=1 stages in a folder of its own, emptied first: a warm machine keeps /tmp between calls, and an earlier
# call's files must not come back as this one's
if [ "${PACK:-0}" = 1 ]; then FINAL=$OUT; OUT=/tmp/gpu_run_out; rm -rf "$OUT"; mkdir -p "$OUT"; fi
# PACK=1: the archive of everything written so far, replaced whole (never left half-written)
pack() { [ "${PACK:-0}" = 1 ] || return 0; tar -czf /tmp/gpu_run_pack.tgz -C "$OUT" . && mv /tmp/gpu_run_pack.tgz "$FINAL/out.tgz"; }
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=src:/tmp/site
else
  export PYTHONPATH=src
fi
export PYTHONUNBUFFERED=1 ENTFLASH_COMMIT=${ENTFLASH_COMMIT:-unknown}
export TRITON_CACHE_DIR=/tmp/tcache TRITON_CACHE_AUTOTUNING=1
GPU_TESTS=${GPU_TESTS:-"tests/test_gpu.py tests/test_gpu_transformers.py tests/test_masks_dropout.py tests/test_transformers.py"}
mkdir -p "$TRITON_CACHE_DIR"
if [ -f .tcache.tgz ]; then tar -xzf .tcache.tgz -C "$TRITON_CACHE_DIR"; fi
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  date -u; echo "commit $ENTFLASH_COMMIT"; } | tee "$OUT/env.txt"
run_step() {
  local step=$1; shift
  echo "=== $step $(date -u +%T)"
  case $step in
    tests)
      # the suite's test ids dealt round-robin to $TEST_PROCS processes
      mapfile -t ids < <(python3 -m pytest -m "not slow" --collect-only -q -p no:cacheprovider $GPU_TESTS | grep '::')
      procs=${TEST_PROCS:-8}
      for ((i = 0; i < procs; i++)); do
        part=(); for j in "${!ids[@]}"; do [ $((j % procs)) = $i ] && part+=("${ids[$j]}"); done
        (timeout ${TEST_TIMEOUT:-300} python3 -m pytest -m "not slow" -q -rf -p no:cacheprovider "${part[@]}" \
           > "$OUT/gpu_tests_$i.txt" 2>&1; echo "exit $?" >> "$OUT/gpu_tests_$i.txt") &
      done
      wait; tail -n 3 "$OUT"/gpu_tests_*.txt
      # one file: the device returns a few files per call
      for ((i = 0; i < procs; i++)); do echo "=== process $i"; cat "$OUT/gpu_tests_$i.txt"; done > "$OUT/gpu_tests.txt"
      rm -f "$OUT"/gpu_tests_[0-9]*.txt ;;
    property) timeout ${PROP_TIMEOUT:-330} python3 -m pytest -m "gpu and slow" -q -rf -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu_property.txt" ;;
    bench) timeout ${BENCH_TIMEOUT:-300} python3 -m entflash.bench --out "$OUT/bench.jsonl" "$@" 2>&1 | tee "$OUT/bench.txt" ;;
    errors) timeout ${ERR_TIMEOUT:-240} python3 -m entflash.bench --errors --out "$OUT/errors.jsonl" 2>&1 | tee "$OUT/errors.txt" ;;
    stages) timeout ${STAGES_TIMEOUT:-120} python3 benchmarks/stage_times.py ${STAGES_ARGS:-} 2>&1 | tee "$OUT/stage_times.txt" ;;
    long) timeout ${LONG_TIMEOUT:-240} python3 benchmarks/long_context.py 2>&1 | tee "$OUT/long_context.txt" ;;
    sanitize)
      timeout ${FILL_TIMEOUT:-120} python3 benchmarks/sanitize.py > /dev/null 2>&1  # fill Triton's cache outside the sanitizer
      for tool in ${SAN_TOOLS:-memcheck racecheck}; do
        { echo "\$ compute-sanitizer --tool $tool python3 benchmarks/sanitize.py"; compute-sanitizer --version | tail -1;
          PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout ${SAN_TIMEOUT:-150} compute-sanitizer --tool $tool python3 benchmarks/sanitize.py; echo "exit $?"; } 2>&1 | tee "$OUT/sanitize_$tool.txt"
      done ;;
    examples)
      RESULTS=/tmp/examples_results bash examples/run_full.sh ${EXAMPLES:-}
      tar -czf "$OUT/examples.tgz" -C /tmp/examples_results --exclude '*.pt' . ;;
    trained)
      timeout ${TRAINED_TIMEOUT:-400} python3 -m entflash.bench.trained --out /tmp/trained_lm 2>&1 | tee "$OUT/trained.txt"
      tar -czf "$OUT/trained_lm.tgz" -C /tmp trained_lm ;;
    steptime)
      timeout ${STEPTIME_TIMEOUT:-150} python3 examples/train_lm.py --out /tmp/step_time --variants \
        --speed-lengths ${SPEED_LENGTHS:-8192 16384} 2>&1 | tee "$OUT/step_time.txt" ;;
    *) echo "unknown step $step (see bash benchmarks/gpu_run.sh --help)" ;;
  esac
}
for group in $steps; do
  # steps joined by '+' side by side (their outputs are separate files), the next group after all of them
  for step in ${group//+/ }; do run_step "$step" "$@" & done
  wait
  pack
done
# the compared libraries' autotuning choices the bench recorded (bench/autotune_cache.py): commit them under
# benchmarks/autotune/ so that later sweeps restore instead of re-tuning
case " ${steps//+/ } " in *" bench "*) cp benchmarks/autotune/*.json "$OUT/" 2>/dev/null || true ;; esac
if [ "${TCACHE_SAVE:-0}" = 1 ]; then
  tar -czf "$OUT/tcache.tgz" -C "$TRITON_CACHE_DIR" . && ls -l "$OUT/tcache.tgz"
fi
pack
