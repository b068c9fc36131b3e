"""Side-by-side table of several runs' metrics.json (e.g. zero-shot vs fine-tuned), per subset.

    python -m simlab.report.compare --runs outputs/zeroshot/<run> outputs/finetune/<run> --names ZS FT \\
        --metrics one_minus_jsd emd accuracy

Subsets are the union over the runs, in the first run's order; a subset a run did not test shows "-". Column titles
come from the metric registry (:mod:`simlab.metrics.registry`).
"""

from __future__ import annotations

from pathlib import Path

from simlab.common import commandline
from simlab.metrics.registry import metric_names, registered_metrics
from simlab.runs.rundir import RunDir


def label(metric: str) -> str:
    """A metric's column title: its registered title, else the name as given."""
    return next((spec.title for spec in registered_metrics() if spec.name == metric), metric)


def load_metrics(run_dir: str | Path) -> dict:
    return RunDir(run_dir).read_metrics()


def comparison_table(runs: list[dict], names: list[str], metrics: list[str]) -> str:
    subsets: list[str] = []
    for run in runs:
        subsets += [s for s in run["subsets"] if s not in subsets]
    header = "| subset | n | " + " | ".join(f"{label(m)} {name}" for m in metrics for name in names) + " |"
    lines = [header, "|---|---:|" + "---:|" * (len(metrics) * len(names))]

    def cell(values: dict | None, metric: str) -> str:
        return "-" if not values or values.get(metric) is None else f"{values[metric]:.4f}"

    for subset in subsets:
        n = next((run["subsets"][subset]["n"] for run in runs if subset in run["subsets"]), "")
        cells = [cell(run["subsets"].get(subset), m) for m in metrics for run in runs]
        lines.append(f"| {subset} | {n} | " + " | ".join(cells) + " |")
    if any(run.get("paper_average") for run in runs):
        cells = [cell(run.get("paper_average"), m) for m in metrics for run in runs]
        lines.append("| paper average | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = commandline.parser("compare", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--names", nargs="+")
    parser.add_argument("--metrics", nargs="+", default=list(metric_names(in_report=True)),
                        help=f"metrics.json keys (default: the report's, {' '.join(metric_names(in_report=True))})")
    args = parser.parse_args(argv)
    names = args.names or [Path(r).name for r in args.runs]
    if len(names) != len(args.runs):
        parser.error(f"{len(args.runs)} runs but {len(names)} names")
    print(comparison_table([load_metrics(r) for r in args.runs], names, args.metrics), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
