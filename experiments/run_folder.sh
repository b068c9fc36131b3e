# Sourced by the experiment scripts: `run NAME OVERRIDES...` runs `python run.py OVERRIDES` into $OUT/NAME, keeps a
# completed run, resumes an interrupted one from its last checkpoint (resume=), and logs to $OUT/NAME.log. A run cut
# before its first checkpoint (or an evaluation-only run, which has none) has nothing to resume: its folder is set
# aside as NAME.incomplete-<time> and the run starts again. Needs PY and OUT set.
run() {
  local name=$1; shift
  local dir="$OUT/$name"
  if [ -f "$dir/status.json" ] && grep -q '"status": "completed"' "$dir/status.json"; then
    echo "== $name: completed, kept"; return 0
  fi
  local where="hydra.run.dir=$dir"
  if [ -f "$dir/status.json" ]; then
    if [ -f "$dir/checkpoints/last.ckpt" ]; then
      where="resume=$dir"
    else
      local aside
      aside="$dir.incomplete-$(date -u +%Y%m%dT%H%M%S)"
      mv "$dir" "$aside" && echo "   $name: no checkpoint to resume from; the cut run is set aside as $aside"
    fi
  fi
  echo "== $name: python run.py $* logger=csv $where ($(date -u +%H:%M:%S))"
  local start
  start=$(date +%s)
  $PY run.py "$@" logger=csv "$where" > "$OUT/$name.log" 2>&1 || echo "   $name FAILED (see $OUT/$name.log)"
  echo "   $name: $(( $(date +%s) - start )) s"
}
