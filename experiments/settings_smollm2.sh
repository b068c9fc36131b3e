#!/usr/bin/env bash
# The paper's settings and baselines for the embedded SmolLM2-135M (issue 3), one run each, then the tables.
# Needs the adapter of a finished fine-tuning run:  bash experiments/settings_smollm2.sh outputs/finetune/<run>
# About 3 hours on the 2-core CPU machine (FT[ctrl] is a second full fine-tune). A run whose metrics.json
# exists is kept, so an interrupted script resumes. FT = the given adapter re-evaluated here (ft_eval).
set -euo pipefail
cd "$(dirname "$0")/.."
FT=${1:?usage: $0 <finetune run dir>}
PY=.venv/bin/python
OUT=outputs/settings
run() { local name=$1; shift; [ -f "$OUT/$name/metrics.json" ] || $PY run.py logger=csv "hydra.run.dir=$OUT/$name" "$@"; }

run ft_ctrl      data.country_control=true
run ft_eval      task=zeroshot model.adapter="$FT/adapter" calibrate=true
run ft_shuffled  task=zeroshot model.adapter="$FT/adapter" data.shuffle_options=true
run zs_ctrl      task=zeroshot data.country_control=true
run zs           task=zeroshot
run uniform      task=baseline baseline=uniform
run avg_culture  task=baseline baseline=avg_culture
run knn          task=baseline baseline=knn
run pew_zs       task=zeroshot data=pew
run pew_ft       task=zeroshot data=pew model.adapter="$FT/adapter"
run zh_zs        task=zeroshot data=wvs_zh
run zh_ft        task=zeroshot data=wvs_zh model.adapter="$FT/adapter"

{
  echo "# Settings and baselines, SmolLM2-135M-Instruct (embedded)"
  echo
  echo "Made by \`bash experiments/settings_smollm2.sh $FT\` at commit $(git rev-parse --short HEAD);"
  echo "each run's own commit is in its metrics.json (\`code\`). FT is the adapter of \`$FT\`, re-evaluated."
  echo
  for metric in one_minus_jsd accuracy; do
    echo "## $metric"
    echo
    $PY -m simlab.compare_runs --metrics "$metric" \
      --runs $OUT/uniform $OUT/avg_culture $OUT/knn $OUT/zs $OUT/zs_ctrl $OUT/ft_eval $OUT/ft_ctrl $OUT/ft_shuffled \
      --names uniform avg_culture knn ZS "ZS[ctrl]" FT "FT[ctrl]" "FT shuffled"
    echo
  done
  echo "## FT calibrated (temperature fitted on C1-Q2) and the noise ceiling"
  echo
  $PY - "$OUT/ft_eval/metrics.json" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[1]))
cal = m["calibrated"]
print(f"Temperature {cal['temperature']:.3f}.\n")
print("| subset | FT 1-JSD | FT calibrated 1-JSD | noise ceiling 1-JSD |")
print("|---|---:|---:|---:|")
for s, v in m["subsets"].items():
    ceiling = m["noise_ceiling"][s]["one_minus_jsd"]
    print(f"| {s} | {v['one_minus_jsd']:.4f} | {cal['subsets'][s]['one_minus_jsd']:.4f} | "
          + ("-" if ceiling is None else f"{ceiling:.4f}") + " |")
PYEOF
  echo
  echo "## Pew (unseen survey)"
  echo
  $PY -m simlab.compare_runs --runs $OUT/pew_zs $OUT/pew_ft --names ZS FT
  echo
  echo "## Chinese vs English prompts, C1-Q2"
  echo
  $PY -m simlab.compare_languages --runs $OUT/ft_eval $OUT/zh_ft --names "English (FT)" "Chinese (FT)"
  $PY -m simlab.compare_languages --runs $OUT/zs $OUT/zh_zs --names "English (ZS)" "Chinese (ZS)"
} > experiments/SETTINGS.md
echo "wrote experiments/SETTINGS.md"
