"""Is run B better than run A on the same rows? The paired difference of a registered metric, row by row.

Two runs' subset means differ by less than their rows' spread suggests: each row is scored by both, so the
per-row differences carry the comparison. Their standard error is given twice: over rows, and clustered by
question, because the rows of one question (one per country) move together; the clustered one is the honest
one for a choice. ``--exclude-rows-of RUN`` drops the rows another run holds (say the seeded sample a fine-tune
picked its checkpoint and temperature on), so what remains is out of sample for both.

    simlab paired A B --subset C1-Q2 [--exclude-rows-of C] [--metric one_minus_jsd] [--uncalibrated]
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from simlab.common import commandline
from simlab.metrics.registry import metric_spec
from simlab.runs.predictions import RowKey
from simlab.runs.rundir import RunDir


@dataclass(frozen=True)
class PairedDifference:
    """B − A on the rows both runs scored (after exclusions)."""

    metric: str
    rows: int
    questions: int
    mean_a: float
    mean_b: float
    se_rows: float
    se_questions: float  # clustered by question (rows of one question are not independent)
    questions_better: int  # questions whose mean difference favours B (in the metric's direction)

    @property
    def difference(self) -> float:
        return self.mean_b - self.mean_a

    @property
    def z(self) -> float:
        """The difference in clustered standard errors (inf when they are 0 and the runs differ)."""
        if self.se_questions == 0:
            return 0.0 if self.difference == 0 else math.copysign(math.inf, self.difference)
        return self.difference / self.se_questions


def row_values(records: dict[RowKey, dict], metric: str, key: str = "predicted") -> dict[RowKey, float]:
    """The metric of each prediction record (``key``: the predictions to score), keyed by country and question."""
    spec = metric_spec(metric)
    values: dict[RowKey, float] = {}
    for row, record in records.items():
        if key not in record:
            raise KeyError(f"prediction record {row} of {record['subset']!r} has no {key!r} (uncalibrated predictions "
                           f"exist only for runs that applied a temperature)")
        preds = torch.tensor([record[key]], dtype=torch.float64)
        target = torch.tensor([record["human"]], dtype=torch.float64)
        values[row] = float(spec.rows(preds, target, torch.ones_like(preds, dtype=torch.bool))[0])
    return values


def paired_difference(a: dict[RowKey, float], b: dict[RowKey, float], metric: str,
                      exclude: set[RowKey] = frozenset()) -> PairedDifference:
    """B − A over the rows both hold, less ``exclude``; an error if the runs scored different rows."""
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise ValueError(f"the two runs scored different rows ({len(only)} in one only, e.g. {only[:3]}): "
                         f"a paired comparison needs the same rows")
    rows = sorted(set(a) - set(exclude))
    if len(rows) < 2:
        raise ValueError(f"{len(rows)} rows left to compare (after excluding {len(exclude)})")
    sign = 1.0 if metric_spec(metric).higher_is_better else -1.0
    diffs = {row: b[row] - a[row] for row in rows}
    n = len(rows)
    mean = sum(diffs.values()) / n
    se_rows = math.sqrt(sum((d - mean) ** 2 for d in diffs.values()) / (n - 1) / n)
    by_question: dict[str, list[float]] = defaultdict(list)
    for (_, question), d in diffs.items():
        by_question[question].append(d)
    g = len(by_question)
    # cluster-robust (CR1) standard error of the mean: residuals summed within each question
    clustered = sum(sum(d - mean for d in ds) ** 2 for ds in by_question.values())
    se_questions = math.sqrt(clustered * g / max(g - 1, 1)) / n
    better = sum(1 for ds in by_question.values() if sign * sum(ds) > 0)
    return PairedDifference(metric, n, g, sum(a[r] for r in rows) / n, sum(b[r] for r in rows) / n, se_rows,
                            se_questions, better)


def compare(run_a: str, run_b: str, subset: str, *, metric: str = "one_minus_jsd", key: str = "predicted",
            exclude_rows_of: str | None = None) -> PairedDifference:
    """The paired difference of two run folders' predictions on one subset."""
    a, b = (row_values(RunDir(run).records_by_row(subset), metric, key) for run in (run_a, run_b))
    for run, values in ((run_a, a), (run_b, b)):
        if not values:
            raise ValueError(f"{run} has no predictions for subset {subset!r}")
    exclude: set[RowKey] = set()
    if exclude_rows_of:
        exclude = set(RunDir(exclude_rows_of).records_by_row(subset))
    return paired_difference(a, b, metric, exclude)


def describe(result: PairedDifference, name_a: str, name_b: str) -> str:
    title = metric_spec(result.metric).title
    return (f"{title} on {result.rows} rows ({result.questions} questions): A {result.mean_a:.4f}, B "
            f"{result.mean_b:.4f}, B - A {result.difference:+.4f} (SE {result.se_rows:.4f} over rows, "
            f"{result.se_questions:.4f} clustered by question: z {result.z:+.2f}); B better on "
            f"{result.questions_better} of {result.questions} questions\n  A = {name_a}\n  B = {name_b}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = commandline.parser("paired", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--subset", required=True)
    parser.add_argument("--metric", default="one_minus_jsd")
    parser.add_argument("--exclude-rows-of", default=None, help="a run folder whose rows of the subset are left out")
    parser.add_argument("--uncalibrated", action="store_true",
                        help="score the predictions before the temperature (predicted_uncalibrated)")
    args = parser.parse_args(argv)
    key = "predicted_uncalibrated" if args.uncalibrated else "predicted"
    result = compare(args.run_a, args.run_b, args.subset, metric=args.metric, key=key,
                     exclude_rows_of=args.exclude_rows_of)
    print(describe(result, args.run_a, args.run_b))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
