#!/usr/bin/env bash
# Issue 3's table for the embedded SmolLM2-135M: the paper's settings and baselines per subset, every column on
# the same seeded sample of N rows per subset (data.limit_eval_per_subset=N; default 200), plus the Pew and
# Chinese-vs-English tables on all rows.
#   bash experiments/settings_smollm2.sh FT_RUN ZS_RUN FTCTRL_CKPT [N]
# FT_RUN: a `make run` folder (adapter/); ZS_RUN: a `make zeroshot` folder; FTCTRL_CKPT: the best checkpoint of
# `python run.py data.country_control=true` (FT[ctrl]). Full-data runs (FT, ZS, the KNN run at KNN_RUN if set)
# are re-scored on the sample with python -m simlab.analysis.reanalyse; the rest run here (~15 min on 2 CPU cores).
# A column whose metrics.json exists is kept, so an interrupted script resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
FT=${1:?usage: $0 FT_RUN ZS_RUN FTCTRL_CKPT [N]}
ZS=${2:?usage: $0 FT_RUN ZS_RUN FTCTRL_CKPT [N]}
FTCTRL_CKPT=${3:?usage: $0 FT_RUN ZS_RUN FTCTRL_CKPT [N]}
N=${4:-200}
PY=.venv/bin/python
OUT=outputs/settings_n$N
run() { local name=$1; shift; [ -f "$OUT/$name/metrics.json" ] || $PY run.py logger=csv "hydra.run.dir=$OUT/$name" data.limit_eval_per_subset=$N "$@"; }
sampled() { local name=$1 src=$2; shift 2; [ -f "$OUT/$name/metrics.json" ] || $PY -m simlab.analysis.reanalyse "$src" --out "$OUT/$name" --limit-eval-per-subset $N "$@"; }

# FT[ctrl]'s adapter from its Lightning checkpoint (LoRA weights only), in peft's format
if [ ! -f "$OUT/ft_ctrl_adapter/adapter_config.json" ]; then
  $PY -m simlab.cli adapter-from-ckpt "$FTCTRL_CKPT" "$OUT/ft_ctrl_adapter"
fi

sampled ft          "$FT" --calibrate-on C1-Q2
sampled zs          "$ZS"
if [ -n "${KNN_RUN:-}" ]; then sampled knn "$KNN_RUN"; else run knn task=baseline baseline=knn; fi
run uniform      task=baseline baseline=uniform
run avg_culture  task=baseline baseline=avg_culture
run zs_ctrl      task=zeroshot data.country_control=true
run ft_ctrl      task=zeroshot data.country_control=true model.adapter="$OUT/ft_ctrl_adapter"
run ft_shuffled  task=zeroshot data.shuffle_options=true model.adapter="$FT/adapter"

{
  echo "# Settings and baselines, SmolLM2-135M-Instruct (embedded)"
  echo
  echo "Made by \`bash experiments/settings_smollm2.sh $FT $ZS $FTCTRL_CKPT $N\`${KNN_RUN:+ (KNN_RUN=$KNN_RUN)} at commit"
  echo "$(git rev-parse --short HEAD). Every column is scored on the same seeded sample of $N rows per subset"
  echo "(C2-Q2 has 271 rows in all). FT and ZS are full-data runs re-scored on the sample; FT[ctrl] is the"
  echo "best checkpoint of a [ctrl] fine-tune; the rest ran on the sample. Where each column came from:"
  echo
  echo "| column | run | commit |"
  echo "|---|---|---|"
  for d in "$OUT"/*/; do
    [ -f "$d/metrics.json" ] || continue
    $PY - "$d" <<'PYEOF'
import json, sys
from pathlib import Path
d = Path(sys.argv[1]); m = json.loads((d / "metrics.json").read_text())
code = m.get("reanalysis_code") if m.get("reanalysed_from") else m.get("code")
commit = ((code or {}).get("commit") or "")[:7] or "not recorded"
if code and code.get("dirty"):
    commit += " (dirty)"
what = "python run.py " + " ".join(m.get("overrides") or [])
if m.get("reanalysed_from"):
    made = (m.get("code") or {}).get("commit", "")[:7] or "an earlier commit"
    what = f"re-scored from {m['reanalysed_from']} ({' '.join(m.get('overrides') or []) or 'defaults'}; made at {made})"
print(f"| {d.name} | {what} | {commit} |")
PYEOF
  done
  echo
  for metric in one_minus_jsd emd accuracy; do
    echo "## $metric"
    echo
    $PY -m simlab.report.compare --metrics "$metric" \
      --runs $OUT/uniform $OUT/avg_culture $OUT/knn $OUT/zs $OUT/zs_ctrl $OUT/ft $OUT/ft_ctrl $OUT/ft_shuffled \
      --names uniform avg_culture knn ZS "ZS[ctrl]" FT "FT[ctrl]" "FT shuffled"
    echo
  done
  echo "## FT calibrated (one temperature fitted on C1-Q2) and the noise ceiling"
  echo
  $PY - "$OUT/ft/metrics.json" <<'PYEOF'
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
avg = m.get("paper_average")
if avg:
    print(f"| paper average | {avg['one_minus_jsd']:.4f} | {cal['paper_average']['one_minus_jsd']:.4f} | |")
PYEOF
  echo
  echo "The noise ceiling needs each row's respondent count n; the valid split (C1-Q2) rows carry none."
} > experiments/SETTINGS.md
echo "wrote experiments/SETTINGS.md"
