# Sourced by the experiment scripts: `run NAME OVERRIDES...` runs `python run.py OVERRIDES` into $OUT/NAME, keeps a
# completed run, resumes an interrupted one (resume=), and logs to $OUT/NAME.log. Needs PY and OUT set.
run() {
  local name=$1; shift
  local dir="$OUT/$name"
  if [ -f "$dir/status.json" ] && grep -q '"status": "completed"' "$dir/status.json"; then
    echo "== $name: completed, kept"; return 0
  fi
  local where="hydra.run.dir=$dir"
  [ -f "$dir/status.json" ] && where="resume=$dir"
  echo "== $name: python run.py $* logger=csv $where ($(date -u +%H:%M:%S))"
  local start
  start=$(date +%s)
  $PY run.py "$@" logger=csv "$where" > "$OUT/$name.log" 2>&1 || echo "   $name FAILED (see $OUT/$name.log)"
  echo "   $name: $(( $(date +%s) - start )) s"
}
