"""Write experiments/QUALITY.md's tables from the runs of experiments/quality_smollm2.sh.

    python experiments/quality_table.py outputs/quality [--default outputs/make_run] > experiments/QUALITY.md.part

Every row comes from one run folder (status completed, predictions complete); a calibrated fine-tune gives two
rows (before and after its temperature). Each row names the command (its overrides) and the commit it ran at.
The diversity columns are the mean pairwise 1-JSD between the countries' distributions of a question, averaged
over questions (people vs the row's model): higher means the countries look more alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np

from simlab.report.breakdown import diversity
from simlab.report.collect import collect_jobs

SUBSETS = ["C1-Q2", "C1-Q3", "C2-Q1", "C2-Q2", "C2-Q3", "C3-Q1", "C3-Q2", "C3-Q3"]
# run folder -> the row's label, in table order
ROWS = {
    "uniform": "uniform",
    "avg_culture": "Avg_Culture",
    "prior_only": "survey prior alone (similarity + answer position)",
    "zs": "ZS (paper prompt)",
    "ft_paper": "FT, the paper's (paper prompt, 1 epoch)",
    "ft_qf": "FT, question-first prompt",
    "ft_qf_shuffled": "  the same, tested on shuffled options",
    "ft_prior": "FT question-first + prior-anchored (survey mean)",
    "ft_prior_sim": "FT question-first + similarity prior + answer-position prior",
    "ft_prior_sim_aug": "the same + option-order augmentation (lr 1e-4, LoRA r 8: method=prior_anchored"
                        " until the recipe below)",
    "ft_prior_sim_aug_shuffled": "  the same, tested on shuffled options",
    "ft_prior_sim_aug_cyclic": "  the same, + test-time averaging over cyclic option orders",
    "ft_prior_sim_aug_ctrl": "  the same, tested under [ctrl] (prompt and prior name a random other country)",
    "prior_anchored_lr9e-4_r16": "**method=prior_anchored, the default**: the same + the recipe search's best"
                                 " (lr 8.96e-4, LoRA r 16)",
}


# the prior-anchored fine-tunes compared with the prior alone: run folder -> short label
ANCHORED = [("ft_prior_sim_aug", "lr 1e-4, r 8"), ("prior_anchored_lr9e-4_r16", "default (lr 8.96e-4, r 16)")]


def fmt(value) -> str:
    return "" if value is None else f"{value:.3f}"


def rows_of(job, label: str) -> list[tuple[str, dict, dict | None]]:
    """(label, subsets, paper average) rows of one run: the simulator's numbers, and before calibration."""
    metrics = job.metrics
    if metrics.get("uncalibrated"):
        t = metrics["calibration"]["temperature"]
        return [(label, metrics["uncalibrated"]["subsets"], metrics["uncalibrated"].get("paper_average")),
                (f"{label}, calibrated (T={t:.2f} on C1-Q2)", metrics["subsets"], metrics.get("paper_average"))]
    if metrics.get("adapter"):  # an adapter evaluated without its saved temperature
        label = f"{label} (uncalibrated)"
    return [(label, metrics["subsets"], metrics.get("paper_average"))]


def command(job) -> str:
    overrides = [o for o in (job.metrics.get("overrides") or []) if not o.startswith(("hydra.", "resume="))]
    commit = ((job.metrics.get("code") or {}).get("commit") or "?")[:7]
    return f"`python run.py {' '.join(overrides)}` @ {commit}"


def diversity_of(job) -> tuple[float, float]:
    points = diversity(job.predictions())
    return statistics.mean(p["human"] for p in points), statistics.mean(p["model"] for p in points)


def one_minus_jsd(p, q) -> float:
    from simlab.metrics.registry import one_minus_jsd as metric_one_minus_jsd  # the metric of metrics.json

    return float(metric_one_minus_jsd(np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)))


def moved_from(job, base, label: str) -> list[str]:
    """How far a run's predictions are from another run's on the same rows (per subset: mean 1-JSD between the
    two predictions, and the change in 1-JSD to the people): what the fine-tuned model adds to the prior."""
    before = {(r["subset"], r["country"], r["question_id"]): r for r in base.predictions()}
    per: dict[str, list[tuple[float, float]]] = {}
    for r in job.predictions():
        b = before[(r["subset"], r["country"], r["question_id"])]
        gain = one_minus_jsd(r["human"], r["predicted"]) - one_minus_jsd(b["human"], b["predicted"])
        per.setdefault(r["subset"], []).append((one_minus_jsd(b["predicted"], r["predicted"]), gain))
    lines = [f"| {label}: mean 1-JSD(prior alone, model) | " + " | ".join(
        fmt(statistics.mean(a for a, _ in per[s])) if s in per else "" for s in SUBSETS) + " |"]
    lines.append(f"| {label}: 1-JSD to people, model - prior alone | " + " | ".join(
        f"{statistics.mean(g for _, g in per[s]):+.3f}" if s in per else "" for s in SUBSETS) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the folder holding the runs (outputs/quality)")
    args = parser.parse_args(argv)
    jobs = {j.path.name: j for j in collect_jobs([args.folder])}
    missing = [name for name in ROWS if name not in jobs or not jobs[name].ok]
    header = "| row | " + " | ".join(SUBSETS) + " | paper avg | diversity people / model |"
    lines = [header, "|---|" + "---:|" * (len(SUBSETS) + 2)]
    commands = []
    for name, label in ROWS.items():
        job = jobs.get(name)
        if job is None or not job.ok:
            continue
        human, model = diversity_of(job)
        for row_label, subsets, average in rows_of(job, label):
            cells = [fmt(subsets.get(s, {}).get("one_minus_jsd")) for s in SUBSETS]
            lines.append(f"| {row_label} | " + " | ".join(cells) + f" | {fmt((average or {}).get('one_minus_jsd'))} | "
                         f"{human:.3f} / {model:.3f} |")
        commands.append(f"* `{name}` ({label.strip()}): {command(job)}")
    rows = {name: jobs[name].metrics["subsets"]["C1-Q2"]["n"] for name in ROWS if name in jobs and jobs[name].ok}
    print("\n".join(lines))
    print()
    print(f"Rows of C1-Q2 per run: {sorted(set(rows.values()))}; every run tests the same seeded sample per subset.")
    print()
    print("\n".join(commands))
    anchored = [(name, label) for name, label in ANCHORED if name in jobs and jobs[name].ok]
    if "prior_only" in jobs and anchored:
        print()
        print("What the fine-tuned model adds to the prior (each prior-anchored fine-tune against the prior alone, "
              "same rows):")
        print()
        print("| | " + " | ".join(SUBSETS) + " |\n|---|" + "---:|" * len(SUBSETS))
        for name, label in anchored:
            print("\n".join(moved_from(jobs[name], jobs["prior_only"], label)))
    if missing:
        print(f"\nNot (yet) completed: {', '.join(missing)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
