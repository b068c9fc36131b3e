#!/usr/bin/env bash
# The quality ablation of experiments/QUALITY.md on the embedded SmolLM2-135M: every row tested on the same seeded
# 300 rows per subset (data.limit_eval_per_subset=300; C2-Q2 has 271), trained on all of C1-Q1 (one epoch).
#   bash experiments/quality_smollm2.sh lane_paper     # the paper's FT (paper prompt, chat template): ~3 h on 1 core
#   bash experiments/quality_smollm2.sh lane_ablation  # baselines, ZS and each ingredient one at a time: ~4 h on 1 core
#   (or its parts side by side: lane_baselines, lane_question_first, lane_prior, lane_more)
#   bash experiments/quality_smollm2.sh lane_recipe    # one recipe candidate at full scale, chosen on C1-Q2
#   bash experiments/quality_smollm2.sh lane_recipe_valid  # the candidate and the default on all C1-Q2 rows
#   python experiments/quality_table.py outputs/quality > experiments/QUALITY.md
# Each run goes to outputs/quality/<name>; a completed run is skipped, an interrupted one resumed (resume=<dir>), so
# the script can be stopped and started again. Two lanes run side by side on a 2-core CPU (one thread each).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/quality}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # two lanes on two cores: one thread each (no oversubscription)
COMMON=(logger=csv data.limit_eval_per_subset=300 callbacks.progress.refresh_rate=50)

run() {  # run NAME OVERRIDES...: start, resume or skip outputs/quality/NAME
  local name=$1; shift
  local dir=$OUT/$name state
  state=$($PY -c "from simlab.runs.rundir import read_status; s=read_status('$dir') or {}; print('dead' if s.get('dead') else s.get('status','new'))")
  case $state in
    completed) echo "== $name: completed, skipped"; return ;;
    interrupted|dead|failed)
      if [ -f "$dir/checkpoints/last.ckpt" ]; then  # a fine-tune: continue exactly where it stopped
        echo "== $name: $state, resuming"; $PY run.py "${COMMON[@]}" "$@" "hydra.run.dir=$dir" "resume=$dir"
      else  # an evaluation (or a fine-tune stopped before its first checkpoint): run again in its folder
        echo "== $name: $state, nothing to resume: running again"; $PY run.py "${COMMON[@]}" "$@" "hydra.run.dir=$dir" overwrite=true
      fi ;;
    *) echo "== $name: starting"; $PY run.py "${COMMON[@]}" "$@" "hydra.run.dir=$dir" ;;
  esac
}

evaluate() {  # evaluate NAME ADAPTER_RUN OVERRIDES...: test a trained adapter under other settings (no training)
  local name=$1 trained=$2; shift 2
  run "$name" task=zeroshot "model.adapter=$OUT/$trained/adapter" "$@"
}

lane_paper() {
  run ft_paper method=ft calibrate=true                                    # the paper's FT, 1 epoch (~3 h on 1 core)
}

lane_baselines() {
  run uniform method=uniform
  run avg_culture method=avg_culture
  run prior_only method=prior_only
  run zs method=zs
}

lane_question_first() {  # FT with the question-first prompt (issue 11), then its letter-position test
  run ft_qf method=ft_question_first calibrate=true
  evaluate ft_qf_shuffled ft_qf data.shuffle_options=eval model.prompt_order=question_first model.prompt_style=plain
}

lane_prior() {  # the prior-anchored candidate: similarity prior, answer-position fallback, option-order augmentation
  # the same config as method=prior_anchored (conf/method/prior_anchored.yaml)
  run ft_prior_sim_aug method=ft_prior_similarity prior.fallback=position data.shuffle_options=train calibrate=true
  evaluate ft_prior_sim_aug_shuffled ft_prior_sim_aug prior=similarity prior.fallback=position \
    data.shuffle_options=eval model.prompt_order=question_first model.prompt_style=plain
  evaluate ft_prior_sim_aug_cyclic ft_prior_sim_aug prior=similarity prior.fallback=position \
    data.test_option_orders=cyclic model.prompt_order=question_first model.prompt_style=plain
  evaluate ft_prior_sim_aug_ctrl ft_prior_sim_aug prior=similarity prior.fallback=position \
    data.country_control=true model.prompt_order=question_first model.prompt_style=plain
}

lane_more() {  # one ingredient at a time: survey-mean prior, similarity prior without augmentation
  run ft_prior method=ft_prior calibrate=true
  run ft_prior_sim method=ft_prior_similarity prior.fallback=position calibrate=true
}

lane_recipe() {  # the recipe search's best (experiments/SEARCH.md: lr 8.96e-4, LoRA r 16) on the full epoch; kept only if
  # it beats method=prior_anchored on C1-Q2 (one epoch: make run must stay under 90 minutes on 2 cores)
  run prior_anchored_lr9e-4_r16 method=prior_anchored module.optimizer.lr=8.96e-4 model.lora.r=16
}

lane_recipe_valid() {  # the candidate against method=prior_anchored on all 1586 C1-Q2 rows (valid only; each adapter
  # with its saved temperature). Decided in advance: the candidate would replace the default only if it is better on
  # the 1286 of them that neither run used to pick its checkpoint or fit its temperature (the 300-row sample).
  local trained pids=()
  for trained in ft_prior_sim_aug prior_anchored_lr9e-4_r16; do
    evaluate "${trained}_valid_all" "$trained" prior=similarity prior.fallback=position model.prompt_order=question_first \
      model.prompt_style=plain "data.test_subsets=[C1-Q2]" data.limit_eval_per_subset=null &
    pids+=($!)
  done
  local pid; for pid in "${pids[@]}"; do wait "$pid"; done  # a failed evaluation fails the lane (a bare wait would not)
}

lane_ablation() { lane_baselines; lane_question_first; lane_prior; lane_more; }

"$@"
