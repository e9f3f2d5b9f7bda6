#!/usr/bin/env bash
# The examples' full modes on one GPU: every variant of every example named trains in its own process, side by
# side (the same seeds and tokens as sequential runs; small models leave the GPU idle between kernels, so
# processes sharing it finish sooner than one after another), then each example gathers its results.json and
# plot, and train_lm measures the training step times with the GPU to itself.
#
#   bash examples/run_full.sh [train_lm] [needle] [encoder]        (default: all three)
#
# Results and one log per process go to ${RESULTS:-examples/results}/<example>/, the tables of all of them
# (examples/summary.py) to $RESULTS/summary.md. Extra arguments of an example: TRAIN_LM_ARGS, NEEDLE_ARGS,
# ENCODER_ARGS (e.g. TRAIN_LM_ARGS="--steps 1500 --max-minutes 6": a variant still training after 6 minutes
# stops, is evaluated where it is and says so in results.json); SPEED_LENGTHS
# (default "8192 16384"; empty skips the step times); EX_TIMEOUT stops any process still running after that
# many seconds.
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
RESULTS=${RESULTS:-examples/results}
names=${*:-train_lm needle encoder}
declare -A script=([train_lm]=train_lm.py [needle]=needle.py [encoder]=train_encoder.py)
declare -A variants=([train_lm]="softmax entmax15 learned" [needle]="softmax entmax15 learned" [encoder]="softmax entmax15")
declare -A extra=([train_lm]="$TRAIN_LM_ARGS --speed-lengths" [needle]="$NEEDLE_ARGS" [encoder]="$ENCODER_ARGS")
for ex in $names; do
  [ -n "${script[$ex]}" ] || { echo "run_full.sh: unknown example '$ex' (accepted: train_lm needle encoder)" >&2; exit 2; }
  mkdir -p "$RESULTS/$ex"
  for v in ${variants[$ex]}; do
    cmd=(python3 "examples/${script[$ex]}" --out "$RESULTS/$ex" --variants "$v" ${extra[$ex]})
    echo "${cmd[*]}" >> "$RESULTS/$ex/commands.txt"
    timeout "${EX_TIMEOUT:-86400}" "${cmd[@]}" > "$RESULTS/$ex/$v.log" 2>&1 &
  done
done
wait
for ex in $names; do
  if [ "$ex" = train_lm ]; then
    python3 examples/train_lm.py --out "$RESULTS/$ex" $TRAIN_LM_ARGS --variants --speed-lengths ${SPEED_LENGTHS-8192 16384} \
      2>&1 | tee "$RESULTS/$ex/gather.log"
  else
    extra_ex=${extra[$ex]}
    python3 "examples/${script[$ex]}" --out "$RESULTS/$ex" $extra_ex --variants 2>&1 | tee "$RESULTS/$ex/gather.log"
  fi
done
# the tables of every example present (examples/summary.py)
python3 examples/summary.py "$RESULTS" 2>&1 | tee "$RESULTS/summary.md"
