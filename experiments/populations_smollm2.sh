#!/usr/bin/env bash
# Issue 22's populations experiment for the embedded SmolLM2-135M on a 2-core CPU (experiments/POPULATIONS.md):
# sex x age subgroups (data=wvs_populations), every method and baseline on the same seeded 250 rows per subset
# (experiment=populations_cpu), the baselines also on every row. One run folder per row of the tables under
# OUT (default outputs/populations); a completed run is kept, an interrupted one resumed, so the script can be
# run again after a cut. Then experiments/populations_table.py writes experiments/POPULATIONS.md.
#   bash experiments/populations_smollm2.sh [OUT]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${1:-outputs/populations}
mkdir -p "$OUT"
echo "$(lscpu | grep -m1 'Model name' | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores" > "$OUT/machine.txt"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} HF_HUB_OFFLINE=1 WANDB_MODE=${WANDB_MODE:-offline}

source experiments/run_folder.sh  # run NAME OVERRIDES...: kept if completed, resumed if interrupted

S="experiment=populations_cpu"
for baseline in uniform avg_culture country_shares subgroup_shift; do run "sample_$baseline" $S method=$baseline; done
run sample_similarity_prior $S method=prior_only
run sample_breakdown_prior_anchored $S method=breakdown_prior_anchored
run sample_prior_anchored $S method=prior_anchored
run sample_ft $S method=ft
run sample_zs $S method=zs
run sample_ft_attribute_ctrl $S method=ft_attribute_ctrl
for baseline in uniform avg_culture country_shares subgroup_shift; do
  run "all_$baseline" data=wvs_populations method=$baseline
done
run all_similarity_prior data=wvs_populations method=prior_only
echo "cpu: $(cat "$OUT/machine.txt")"
