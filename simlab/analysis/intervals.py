"""How the interval score was chosen, and can be checked again on any run: the split-half comparison of the scores
of :mod:`simlab.simulator.intervals` on one subset of a finished run (the valid split, C1-Q2: never a test subset).

    python -m simlab.analysis.intervals RUN_DIR [--subset C1-Q2] [--level 0.9] [--splits 20] [--calibrate]

The subset's questions are halved at random (``--splits`` seeded halvings); intervals fitted on one half are
measured on the other. Each score is reported with its mean, min and max held-out coverage and mean width, and so
is the simultaneous scheme (each question's maximum score, the usual conformal quantile over questions), which
covers all the shares of a question at once: the reason it is not the default. ``--calibrate`` first applies a
temperature fitted on the subset, as ``calibrate=true`` does before fitting intervals (use it on a run made
without calibration).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np

from simlab.common import commandline
from simlab.simulator.intervals import (
    DEFAULT_DELTA,
    DEFAULT_LEVEL,
    SCORES,
    ConformalIntervals,
    compare_scores,
    coverage_and_width,
    question_key,
    share_scale,
)


def simultaneous_quantile(predictions, targets, questions: Sequence[Hashable], level: float, score: str,
                          delta: float) -> float | None:
    """The conformal quantile of each question's largest score: all of a new question's shares are inside at once
    with probability >= level; None when too few questions."""
    worst: dict[Hashable, float] = {}
    for p, y, q in zip(predictions, targets, questions):
        p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
        worst[q] = max(worst.get(q, 0.0), float(np.max(np.abs(y - p) / share_scale(p, score, delta))))
    m = len(worst)
    rank = math.ceil(level * (m + 1))
    return None if rank > m else float(np.sort(list(worst.values()))[rank - 1])


def simultaneous_check(predictions, targets, questions, *, level: float, score: str, delta: float, splits: int,
                       seed: int) -> dict:
    """The split-half check of the simultaneous scheme, on the same halvings as :func:`compare_scores`."""
    keys = list(dict.fromkeys(questions))
    rng = np.random.default_rng(seed)
    coverages, widths = [], []
    for _ in range(int(splits)):
        shuffled = [keys[i] for i in rng.permutation(len(keys))]
        first = set(shuffled[: len(keys) // 2])
        halves = ([i for i, q in enumerate(questions) if q in first],
                  [i for i, q in enumerate(questions) if q not in first])
        for fit_rows, held_rows in (halves, halves[::-1]):
            quantile = simultaneous_quantile([predictions[i] for i in fit_rows], [targets[i] for i in fit_rows],
                                             [questions[i] for i in fit_rows], level, score, delta)
            coverage, width = coverage_and_width(ConformalIntervals(level, score, delta, quantile),
                                                 [predictions[i] for i in held_rows], [targets[i] for i in held_rows])
            coverages.append(coverage)
            widths.append(width)
    return {"coverage": float(np.mean(coverages)), "coverage_min": float(np.min(coverages)),
            "coverage_max": float(np.max(coverages)), "width": float(np.mean(widths))}


def compare_run(run_dir: str | Path, subset: str = "C1-Q2", level: float = DEFAULT_LEVEL, splits: int = 20,
                seed: int = 0, calibrate: bool = False, delta: float = DEFAULT_DELTA) -> dict[str, dict]:
    """{scheme: held-out coverage and width} for every score and the simultaneous scheme on ``subset`` of a run."""
    from simlab.analysis.reanalyse import load_run_rows
    from simlab.runs.rundir import RunDir

    rows = load_run_rows(Path(run_dir)).rows
    predictions = RunDir(run_dir).predictions_for_rows(rows)
    if subset not in predictions:
        raise ValueError(f"{run_dir}: subset {subset!r} was not tested (tested: {sorted(predictions)})")
    predicted, subset_rows = predictions[subset], rows[subset]
    if calibrate:
        from simlab.simulator.temperature import calibrate_predictions

        _, rescaled = calibrate_predictions(predicted, [list(r.target) for r in subset_rows], {subset: predicted})
        predicted = rescaled[subset]
    targets = [list(r.target) for r in subset_rows]
    questions = [question_key(r) for r in subset_rows]
    result = compare_scores(predicted, targets, questions, level=level, scores=SCORES, delta=delta, splits=splits,
                            seed=seed)
    result["binomial, all shares of a question at once"] = simultaneous_check(
        predicted, targets, questions, level=level, score="binomial", delta=delta, splits=splits, seed=seed)
    return result


def comparison_table(result: dict[str, dict]) -> str:
    lines = ["| score | held-out coverage (mean) | min | max | mean width |", "|---|---:|---:|---:|---:|"]
    for name, check in result.items():
        lines.append(f"| {name} | {check['coverage']:.3f} | {check['coverage_min']:.3f} | "
                     f"{check['coverage_max']:.3f} | {check['width']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = commandline.parser("intervals", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--subset", default="C1-Q2", help="the subset to compare on: the valid split, never a test")
    parser.add_argument("--level", type=float, default=DEFAULT_LEVEL)
    parser.add_argument("--splits", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibrate", action="store_true", help="apply a temperature fitted on the subset first")
    args = parser.parse_args(argv)
    result = compare_run(args.run_dir, args.subset, args.level, args.splits, args.seed, args.calibrate)
    print(comparison_table(result))


if __name__ == "__main__":
    main()
