#!/usr/bin/env bash
# The paper's settings and baselines for the embedded SmolLM2-135M (issue 3), one run each, then the tables.
# Needs a finished fine-tuning run and a zero-shot run of the same model (make run; make zeroshot):
#   bash experiments/settings_smollm2.sh outputs/finetune/<run> outputs/zeroshot/<run>
# FT and ZS are those runs' predictions, re-analysed (position bias, noise ceiling, FT's temperature fitted on
# C1-Q2) with python -m simlab.reanalyse: no second evaluation pass.
# About 3 hours on the 2-core CPU machine (FT[ctrl] is a second full fine-tune). A run whose metrics.json
# exists is kept, so an interrupted script resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
FT=${1:?usage: $0 <finetune run dir> <zeroshot run dir>}
ZS=${2:?usage: $0 <finetune run dir> <zeroshot run dir>}
PY=.venv/bin/python
OUT=outputs/settings
run() { local name=$1; shift; [ -f "$OUT/$name/metrics.json" ] || $PY run.py logger=csv "hydra.run.dir=$OUT/$name" "$@"; }
reanalysed() { local name=$1 src=$2; shift 2; [ -f "$OUT/$name/metrics.json" ] || $PY -m simlab.reanalyse "$src" --out "$OUT/$name" "$@"; }

run ft_ctrl      data.country_control=true
reanalysed ft_eval "$FT" --calibrate-on C1-Q2
run ft_shuffled  task=zeroshot model.adapter="$FT/adapter" data.shuffle_options=true
run zs_ctrl      task=zeroshot data.country_control=true
reanalysed zs    "$ZS"
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
  echo "Made by \`bash experiments/settings_smollm2.sh $FT $ZS\` at commit $(git rev-parse --short HEAD)."
  echo "FT and ZS are the predictions of those two runs, re-analysed (\`python -m simlab.reanalyse\`); every other"
  echo "column is its own run under \`$OUT/\`. Where each run came from:"
  echo
  echo "| run | command overrides | commit |"
  echo "|---|---|---|"
  for d in $OUT/*/; do
    $PY - "$d" <<'PYEOF'
import json, sys
from pathlib import Path
d = Path(sys.argv[1]); m = json.loads((d / "metrics.json").read_text())
source = m.get("reanalysed_from")
code = m.get("code") or {}
commit = (code.get("commit") or "")[:7] + (" (dirty)" if code.get("dirty") else "") if code else "not recorded (before 6a0532f)"
what = " ".join(m.get("overrides") or []) or "(defaults)"
if source:
    what = f"{what}; re-analysed from {source}"
print(f"| {d.name} | {what} | {commit} |")
PYEOF
  done
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
