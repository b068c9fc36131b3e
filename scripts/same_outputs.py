"""Do two sets of run folders hold the same numbers? For a refactoring that must move none.

    python scripts/same_outputs.py BEFORE_DIR AFTER_DIR smoke avg_culture ...

Per run name: metrics.json compared value by value (floats to 1e-9; provenance and paths ignored: code,
wall_time_s, overrides, adapter, best_valid), predictions.jsonl and results.md byte for byte. Exit 1 on any
difference. Make the two sets with the same commands at the two commits (e.g. `python run.py experiment=smoke
logger=csv hydra.run.dir=<dir>/smoke` with OMP_NUM_THREADS=1 in both).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

IGNORED = {"code", "wall_time_s", "overrides", "adapter", "best_valid"}
TOLERANCE = 1e-9


def differences(a, b, path: str = "") -> tuple[list[str], float]:
    """(what differs, the largest float difference within tolerance)."""
    if isinstance(a, dict) and isinstance(b, dict):
        found, worst = [], 0.0
        for key in sorted(set(a) | set(b)):
            if not path and key in IGNORED:
                continue
            if key not in a or key not in b:
                found.append(f"{path}/{key}: only in {'after' if key in b else 'before'}")
                continue
            more, gap = differences(a[key], b[key], f"{path}/{key}")
            found, worst = found + more, max(worst, gap)
        return found, worst
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        found, worst = [], 0.0
        for i, (x, y) in enumerate(zip(a, b)):
            more, gap = differences(x, y, f"{path}[{i}]")
            found, worst = found + more, max(worst, gap)
        return found, worst
    if isinstance(a, float) or isinstance(b, float):
        numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
        if numbers and abs(a - b) <= TOLERANCE:
            return [], abs(a - b)
        return [f"{path}: {a!r} vs {b!r}"], 0.0
    return ([] if a == b else [f"{path}: {a!r} vs {b!r}"]), 0.0


def main(argv: list[str]) -> int:
    before, after, names = Path(argv[0]), Path(argv[1]), argv[2:]
    failed = False
    for name in names:
        old, new = before / name, after / name
        found, worst = differences(json.loads((old / "metrics.json").read_text(encoding="utf-8")),
                                   json.loads((new / "metrics.json").read_text(encoding="utf-8")))
        same = {f: (old / f).read_bytes() == (new / f).read_bytes() for f in ("predictions.jsonl", "results.md")}
        print(f"{name}: metrics.json {len(found)} differences (largest float gap {worst:.1e}); "
              + "; ".join(f"{f} {'identical' if ok else 'DIFFERS'}" for f, ok in same.items()))
        for line in found[:10]:
            print("   ", line)
        failed |= bool(found) or not all(same.values())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
