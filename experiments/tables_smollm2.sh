#!/usr/bin/env bash
# Issue 4's tables for the embedded SmolLM2-135M at scale=cpu_small: the loss ablation (table7) and the
# baselines (table11) as Hydra sweeps, then python -m simlab.report on each, then experiments/RESULTS.md.
#   bash experiments/tables_smollm2.sh                     # run both sweeps (~30-60 min on 2 CPU cores), report
#   bash experiments/tables_smollm2.sh T7_DIR T11_DIR      # report on sweeps already made
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ $# -eq 2 ]; then
  T7=$1 T11=$2
else
  STAMP=$(date +%Y-%m-%d_%H-%M-%S)
  T7=multirun/table7/$STAMP T11=multirun/table11/$STAMP
  $PY run.py -m experiment=table11 "hydra.sweep.dir=$T11" || echo "table11: some jobs failed (see the report)"
  $PY run.py -m experiment=table7 "hydra.sweep.dir=$T7" || echo "table7: some jobs failed (see the report)"
fi
$PY -m simlab.report "$T7" --out "$T7/report" --subset C2-Q1 --title "Table 7: loss ablation (SmolLM2-135M, scale=cpu_small)"
$PY -m simlab.report "$T11" --out "$T11/report" --subset C2-Q1 --title "Table 11: baselines vs ZS and FT (SmolLM2-135M, scale=cpu_small)"

FIG=experiments/figures
mkdir -p "$FIG"
for t in 7 11; do
  dir=$([ $t = 7 ] && echo "$T7" || echo "$T11")
  for png in "$dir"/report/*.png; do cp "$png" "$FIG/table${t}_$(basename "$png")"; done
done

section() {  # table number, sweep dir
  local n=$1 dir=$2
  echo "## Table $n"
  echo
  echo "Sweep: \`python run.py -m experiment=table$n\` (folder \`$dir\`, not in git); report:"
  echo "\`python -m simlab.report $dir --subset C2-Q1\`. Each job's status is in the jobs table."
  echo
  # the report's markdown, headings shifted one level down, figure links pointed at experiments/figures/
  sed -e '1d' -e 's/^### /#### /' -e 's/^## /### /' -e "s#](\([a-zA-Z0-9_.-]*\.png\))#](figures/table${n}_\1)#" \
    "$dir/report/report.md"
  echo
  echo "The same numbers as CSV: \`$dir/report/tables.csv\` and \`breakdown_dimension.csv\` (LaTeX: \`tables.tex\`)."
  echo
}
{
  echo "# Sweep tables (issue 4): SmolLM2-135M-Instruct, scale=cpu_small"
  echo
  echo "Made by \`bash experiments/tables_smollm2.sh${1:+ $*}\` at commit $(git rev-parse --short HEAD); each job's"
  echo "metrics.json records the commit that ran it. scale=cpu_small: FT trains on 40 random batches (320 rows)"
  echo "of C1-Q1; every job is tested on the same seeded 50 rows per subset; baselines fit on all of C1-Q1."
  echo "These numbers show the pipeline end to end on a 2-core CPU; they are not the paper's full-scale tables"
  echo "(experiments/SETTINGS.md has full-data runs)."
  echo
  section 7 "$T7"
  section 11 "$T11"
} > experiments/RESULTS.md
echo "wrote experiments/RESULTS.md"
