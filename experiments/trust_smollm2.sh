#!/usr/bin/env bash
# Issue 23's numbers (experiments/TRUST.md): 90% conformal prediction intervals (calibrated on C1-Q2's questions),
# their coverage and width per subset, and effective respondents, for make run's default simulator and for the
# uniform and Avg_Culture baselines on the same rows, on WVS and on the Pew subsets (the unseen survey). One run
# folder per row under OUT (default outputs/trust); a completed run is kept, an interrupted one resumed.
#   bash experiments/trust_smollm2.sh [OUT] [--baselines-only]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${1:-outputs/trust}
ONLY=${2:-}
mkdir -p "$OUT"
echo "$(lscpu | grep -m1 'Model name' | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores" > "$OUT/machine.txt"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} HF_HUB_OFFLINE=1 WANDB_MODE=${WANDB_MODE:-offline}

source experiments/run_folder.sh  # run NAME OVERRIDES...: kept if completed, resumed if interrupted

run uniform method=uniform calibrate=true
run avg_culture method=avg_culture calibrate=true
run pew_uniform data=pew method=uniform calibrate=true "intervals.source=$OUT/uniform"
run pew_avg_culture data=pew method=avg_culture calibrate=true "intervals.source=$OUT/avg_culture"
if [ "$ONLY" != "--baselines-only" ]; then
  run default method=prior_anchored      # make run's job (calibrate=true: temperature, then intervals, on C1-Q2)
  run pew_default data=pew task=zeroshot "model.adapter=$OUT/default/adapter"
fi
echo "cpu: $(cat "$OUT/machine.txt")"
