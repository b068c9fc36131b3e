"""The share of the gap closed: how much of the distance between the best baseline and the sampling-noise ceiling
a method covers, per subset,

    share = (method - best baseline) / (ceiling - best baseline)        (1 - JSD)

0 is the best baseline, 1 the ceiling (what a perfect simulator scores against a finite sample,
:mod:`simlab.analysis.ceiling`), below 0 worse than the best baseline. The best baseline is chosen per subset
among those given (the strongest on that subset: the comparison a method must win), and every run must have
scored the same number of rows. Only 1 - JSD has a ceiling, so only 1 - JSD has a gap.

    simlab gap RUN [RUN ...] --baselines RUN [RUN ...] [--subsets S ...]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from simlab.common import commandline
from simlab.runs.rundir import RunDir

METRIC = "one_minus_jsd"


def share_closed(method: float, best: float, ceiling: float | None) -> float | None:
    """(method - best) / (ceiling - best); None without a ceiling or when the best baseline is at or above it."""
    if ceiling is None or ceiling <= best:
        return None
    return (method - best) / (ceiling - best)


@dataclass(frozen=True)
class SubsetGap:
    """One subset: the method's 1 - JSD, the best baseline's (and which), the ceiling and the share closed."""

    subset: str
    rows: int
    method: float
    best: float
    best_baseline: str
    ceiling: float | None

    @property
    def share(self) -> float | None:
        return share_closed(self.method, self.best, self.ceiling)


def subset_gaps(method: Mapping, baselines: Mapping[str, Mapping], subsets: Sequence[str] | None = None,
                method_name: str = "method") -> list[SubsetGap]:
    """Per subset (``subsets``, default every subset the method scored), the gap of ``method`` (a metrics.json
    dict) against the best of ``baselines`` (name -> metrics.json dict); the ceiling is the method's
    ``noise_ceiling`` (the rows' own, the same for every run that scored them)."""
    if not baselines:
        raise ValueError("the share of the gap closed needs at least one baseline run")
    scored = method.get("subsets") or {}
    subsets = list(subsets) if subsets is not None else list(scored)
    gaps = []
    for subset in subsets:
        if subset not in scored:
            raise ValueError(f"{method_name} has no scores for subset {subset!r} (it has {sorted(scored)})")
        rows = scored[subset].get("n")
        best_name, best = None, None
        for name, metrics in baselines.items():
            theirs = (metrics.get("subsets") or {}).get(subset)
            if theirs is None:
                raise ValueError(f"baseline {name} has no scores for subset {subset!r}")
            if theirs.get("n") != rows:
                raise ValueError(f"{subset}: {method_name} scored {rows} rows, baseline {name} {theirs.get('n')}: "
                                 f"the gap needs the same rows")
            if best is None or theirs[METRIC] > best:
                best_name, best = name, float(theirs[METRIC])
        ceiling = ((method.get("noise_ceiling") or {}).get(subset) or {}).get(METRIC)
        gaps.append(SubsetGap(subset, rows, float(scored[subset][METRIC]), best, best_name,
                              float(ceiling) if ceiling is not None else None))
    return gaps


def overall(gaps: Sequence[SubsetGap]) -> float | None:
    """The share of the summed gap closed over ``gaps`` (each subset weighted equally, as the paper's average)."""
    if not gaps or any(g.ceiling is None for g in gaps):
        return None
    return share_closed(sum(g.method for g in gaps), sum(g.best for g in gaps), sum(g.ceiling for g in gaps))


def run_name(run: str | Path, metrics: Mapping) -> str:
    """A run as the table names it: its baseline (if one) and its folder."""
    label = metrics.get("baseline") or metrics.get("task") or "run"
    return f"{label} ({run})"


def describe(name: str, gaps: Sequence[SubsetGap]) -> str:
    def number(value: float | None, digits: int = 4) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [f"{name}: 1-JSD, the best baseline per subset, the noise ceiling, the share of the gap closed",
             f"  {'subset':8s} {'rows':>6s} {'method':>7s} {'best':>7s} {'ceiling':>7s} {'share':>7s}  best baseline"]
    for g in gaps:
        lines.append(f"  {g.subset:8s} {g.rows!s:>6s} {g.method:7.4f} {g.best:7.4f} {number(g.ceiling):>7s} "
                     f"{number(g.share, 3):>7s}  {g.best_baseline}")
    lines.append(f"  all subsets (summed gap): {number(overall(gaps), 3)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = commandline.parser("gap", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="the methods' run folders")
    parser.add_argument("--baselines", nargs="+", required=True, help="the baselines' run folders (task=baseline)")
    parser.add_argument("--subsets", nargs="+", default=None, help="default: every subset each method scored")
    args = parser.parse_args(argv)
    baselines = {}
    for run in args.baselines:
        metrics = RunDir(run).read_metrics()
        baselines[run_name(run, metrics)] = metrics
    for run in args.runs:
        metrics = RunDir(run).read_metrics()
        name = run_name(run, metrics)
        print(describe(name, subset_gaps(metrics, baselines, args.subsets, method_name=name)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
