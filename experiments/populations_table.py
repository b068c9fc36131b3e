"""experiments/POPULATIONS.md from the run folders of experiments/populations_smollm2.sh (issue 22).

Every number is read from a run folder (metrics.json, predictions.jsonl); nothing is typed in.

    python experiments/populations_table.py OUT [--out experiments/POPULATIONS.md]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.spatial.distance import jensenshannon

from simlab.analysis.gap import subset_gaps
from simlab.analysis.paired import compare
from simlab.data.files import read_data_json
from simlab.paths import data_root
from simlab.runs.predictions import read_predictions

SUBSETS = ["C1-Q2", "C1-Q3", "C2-Q1", "C2-Q2", "C2-Q3", "C3-Q1", "C3-Q2", "C3-Q3"]
UNSEEN_COUNTRIES = ["C2-Q1", "C2-Q2", "C2-Q3", "C3-Q1", "C3-Q2", "C3-Q3"]
# (run folder, row title, command) per use; the baselines of a use are the rows before its first model row
NEW_COUNTRY = [
    ("uniform", "uniform", "method=uniform"),
    ("avg_culture", "same subgroup, mean of the training countries", "method=avg_culture"),
    ("similarity_prior", "same subgroup, similarity prior", "method=prior_only"),
]
NEW_COUNTRY_MODELS = [
    ("zs", "ZS", "method=zs"),
    ("ft", "FT (the paper's)", "method=ft"),
    ("prior_anchored", "prior-anchored FT (similarity prior)", "method=prior_anchored"),
]
BREAKDOWN = [
    ("uniform", "uniform", "method=uniform"),
    ("country_shares", "the country's overall shares", "method=country_shares"),
    ("subgroup_shift", "overall shares + mean subgroup shift", "method=subgroup_shift"),
]
BREAKDOWN_MODELS = [
    ("breakdown_prior_anchored", "prior-anchored FT (breakdown prior)", "method=breakdown_prior_anchored"),
]


def load(out: Path, name: str) -> dict | None:
    path = out / name / "metrics.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def cell(metrics: dict | None, subset: str, key: str = "one_minus_jsd") -> str:
    if metrics is None or subset not in (metrics.get("subsets") or {}):
        return "–"
    return f"{metrics['subsets'][subset][key]:.4f}"


def average(metrics: dict | None, key: str = "one_minus_jsd") -> str:
    value = (metrics or {}).get("paper_average", {}).get(key)
    return "–" if value is None else f"{value:.4f}"


def use_table(out: Path, prefix: str, baselines, models, key: str) -> list[str]:
    head = "| " + " | ".join(["method", *SUBSETS, "paper avg"]) + " |"
    lines = [head, "|---" + "|---:" * (len(SUBSETS) + 1) + "|"]
    for name, title, _ in [*baselines, *models]:
        metrics = load(out, prefix + name)
        lines.append("| " + " | ".join([title, *(cell(metrics, s, key) for s in SUBSETS), average(metrics, key)])
                     + " |")
    if key == "one_minus_jsd":
        reference = next((m for m in (load(out, prefix + n) for n, _, _ in baselines) if m), None)
        ceiling = (reference or {}).get("noise_ceiling") or {}
        lines.append("| " + " | ".join(["*noise ceiling (n_eff)*", *(
            f"*{ceiling[s]['one_minus_jsd']:.4f}*" if s in ceiling else "–" for s in SUBSETS), ""]) + " |")
        base = {n: m for n, _, _ in baselines if (m := load(out, prefix + n))}
        for name, title, _ in models:
            metrics = load(out, prefix + name)
            if metrics is None or not base:
                continue
            gaps = {g.subset: g for g in subset_gaps(metrics, base, SUBSETS, title)}
            lines.append("| " + " | ".join([f"*gap closed: {title}*", *(
                f"*{gaps[s].share:+.2f}*" if s in gaps and gaps[s].share is not None else "–" for s in SUBSETS), ""])
                + " |")
    return lines


def population_key(population: dict) -> tuple:
    """A population as a hashable key (its attributes in name order)."""
    return tuple(sorted(population.items()))


def cells(out: Path, name: str) -> dict[tuple[str, str, str], list[dict]]:
    """The run's prediction records grouped by (subset, country, question id): one cell's subgroups together."""
    by_cell: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    path = out / name / "predictions.jsonl"
    if path.is_file():
        for record in read_predictions(path):
            by_cell[(record["subset"], record["country"], str(record["question_id"]))].append(record)
    return by_cell


def diversity(by_cell: dict[tuple[str, str, str], list[dict]]) -> dict[str, tuple[float, float, int]]:
    """Per subset: the mean over (country, question) cells with at least two subgroups of the mean pairwise
    Jensen-Shannon distance between the subgroups' distributions, for the people (``human``) and the run."""
    per_subset: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (subset, _, _), records in by_cell.items():
        if len(records) < 2:
            continue
        pairs = list(itertools.combinations(records, 2))
        people = np.mean([jensenshannon(a["human"], b["human"]) for a, b in pairs])
        model = np.mean([jensenshannon(a["predicted"], b["predicted"]) for a, b in pairs])
        per_subset[subset].append((people, model))
    result = {}
    for subset, values in per_subset.items():
        array = np.asarray(values)
        result[subset] = (float(array[:, 0].mean()), float(array[:, 1].mean()), len(values))
    return result


POPULATION_FILES = [f"wvs7_populations/populations_{split}.json" for split in ("train", "valid", "test")]
NOISE_DRAWS = 200  # Monte Carlo surveys per cell for the diversity that sampling noise alone makes


def effective_sizes() -> dict[tuple, float]:
    """(population as sorted items, question id) -> n_eff, from the shipped population files (data=wvs_populations)."""
    sizes = {}
    for name in POPULATION_FILES:
        for row in read_data_json(name, data_root()):
            sizes[(population_key(row["population"]), str(row["id"]))] = float(row["n_eff"])
    return sizes


def noise_diversity(by_cell: dict[tuple[str, str, str], list[dict]], sizes: dict[tuple, float],
                    seed: int = 0) -> dict[str, float]:
    """Per subset: the subgroup diversity (as :func:`diversity` measures it) that sampling noise alone would show if
    every subgroup of a cell answered alike: each subgroup's survey redrawn (multinomial, its rounded n_eff) from the
    cell's pooled shares (the subgroups' shares weighted by n_eff), the mean pairwise JSD averaged over draws."""
    rng = np.random.default_rng(seed)
    per_subset: dict[str, list[float]] = defaultdict(list)
    for (subset, _, question), records in sorted(by_cell.items()):
        if len(records) < 2:
            continue
        n = np.array([max(1, round(sizes[(population_key(r["population"]), question)])) for r in records])
        pooled = (np.asarray([r["human"] for r in records]) * n[:, None]).sum(0)
        pooled /= pooled.sum()
        draws = [rng.multinomial(k, pooled, size=NOISE_DRAWS) / k for k in n]  # [subgroup] -> [draw, option]
        pairs = [jensenshannon(draws[i], draws[j], axis=1) for i, j in itertools.combinations(range(len(n)), 2)]
        per_subset[subset].append(float(np.mean(pairs)))
    return {subset: float(np.mean(values)) for subset, values in per_subset.items()}


def movement(out: Path, anchor: str, model: str) -> dict[str, dict[str, float]]:
    """Per subset, how a prior-anchored model moves away from the baseline it is anchored on (same rows): the mean
    JSD between the anchor and the people, between the model and the anchor, the share of rows on which the model is
    closer to the people than the anchor is, and the mean cosine between the model's move (model − anchor) and the
    move the people would need (people − anchor), in share space."""
    a_path, m_path = out / f"sample_{anchor}" / "predictions.jsonl", out / f"sample_{model}" / "predictions.jsonl"
    if not (a_path.is_file() and m_path.is_file()):
        return {}

    def key(r):
        return r["subset"], population_key(r.get("population") or {"country": r["country"]}), str(r["question_id"])

    anchors = {key(r): r for r in read_predictions(a_path)}
    per_subset: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    for r in read_predictions(m_path):
        a = anchors[key(r)]  # the same rows by construction (one seeded sample); a missing row is an error
        people, prior, predicted = (np.asarray(v, dtype=float) for v in (r["human"], a["predicted"], r["predicted"]))
        need, move = people - prior, predicted - prior
        norm = np.linalg.norm(need) * np.linalg.norm(move)
        per_subset[r["subset"]].append((jensenshannon(prior, people), jensenshannon(predicted, prior),
                                        float(jensenshannon(predicted, people) < jensenshannon(prior, people)),
                                        float(need @ move / norm) if norm > 0 else 0.0))
    return {s: dict(zip(("anchor_people", "model_anchor", "closer", "cosine"), np.mean(v, axis=0)))
            for s, v in per_subset.items()}


def why_section(out: Path) -> list[str]:
    """Why a prior-anchored fine-tune does or does not beat its prior: the room it has and how it moves."""
    lines = ["## Why the fine-tunes do (not) beat the baselines", "",
             "Each prior-anchored fine-tune starts from a baseline (its prior) and learns a correction. Per subset, on"
             " the same rows: *anchor → people*, the mean JSD distance from the prior to the survey shares; *noise*,"
             " the part of that distance sampling noise alone makes (1 − the noise ceiling: the distance from the"
             " truth to a survey of n_eff respondents); *model → anchor*, how far the model moves from its prior;"
             " *closer*, the share of rows on which the model ends nearer the people than its prior; *cosine*, the"
             " mean cosine between the model's move and the move the people would need (0: unrelated).", "",
             "| use (anchor → model) | | " + " | ".join(SUBSETS) + " |", "|---|---" + "|---:" * len(SUBSETS) + "|"]
    for use, anchor, model in (("new country", "similarity_prior", "prior_anchored"),
                               ("breakdown", "subgroup_shift", "breakdown_prior_anchored")):
        moved = movement(out, anchor, model)
        if not moved:
            continue
        ceiling = (load(out, f"sample_{anchor}") or {}).get("noise_ceiling") or {}
        title = f"{use} ({anchor} → {model})"
        for label, values in (
                ("anchor → people", {s: moved[s]["anchor_people"] for s in moved}),
                ("noise", {s: 1 - ceiling[s]["one_minus_jsd"] for s in ceiling}),
                ("model → anchor", {s: moved[s]["model_anchor"] for s in moved}),
                ("closer", {s: moved[s]["closer"] for s in moved}),
                ("cosine", {s: moved[s]["cosine"] for s in moved})):
            lines.append(f"| {title} | {label} | " + " | ".join(
                f"{values[s]:.4f}" if s in values else "–" for s in SUBSETS) + " |")
            title = ""
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder experiments/populations_smollm2.sh wrote")
    parser.add_argument("--out-file", type=Path, default=Path("experiments/POPULATIONS.md"))
    args = parser.parse_args()
    out = args.out
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    any_run = next((m for m in (load(out, f"sample_{n}") for n in ("uniform", "zs", "ft")) if m), {})
    rows = any_run.get("rows") or {}
    machine = (out / "machine.txt").read_text().strip() if (out / "machine.txt").is_file() else "not recorded"
    walls = [(path.name.removeprefix("sample_"), json.loads((path / "metrics.json").read_text()))
             for path in sorted(out.glob("sample_*")) if (path / "metrics.json").is_file()]
    walls = [(name, m) for name, m in walls if m.get("wall_time_s") is not None]
    lines = [
        "# Populations: subgroups of countries (issue 22), SmolLM2-135M on a 2-core CPU",
        "",
        "Made by `bash experiments/populations_smollm2.sh <out>` then `python experiments/populations_table.py <out>`"
        f" (commit {commit}; each run's metrics.json records the commit that ran it). Data: `data=wvs_populations`,"
        " sex x age subgroups of the WVS-7 countries with respondent files, shares under the survey weights, cells"
        " of at least 50 respondents (`simlab build-populations`, docs/DATA.md). Scale (`experiment=populations_cpu`):"
        " a fine-tune trains on 600 random batches of 8 (4,800 of the 33,591 C1-Q1 population rows, one pass);"
        " every method and baseline is scored on the same seeded sample of whole (country, question) cells, all"
        " subgroups of a drawn cell, at least 250 rows per subset"
        + (f" (rows: {', '.join(f'{k} {v}' for k, v in rows.items() if k in SUBSETS)})" if rows else "")
        + ". Baselines fit on the whole C1-Q1. Methods were chosen on C1-Q2 (valid) only; the test subsets are"
        " reported, never used to choose. The noise ceiling is the expected 1−JSD of a perfect simulator against"
        " a survey of the row's Kish effective size (n_eff). *Gap closed*: (method − best baseline of that use on"
        " the subset) / (ceiling − best baseline); 0 = the best baseline, 1 = the ceiling, below 0 = worse.",
        "",
        f"CPU (`lscpu` model name, cores): {machine}. Wall time per run (metrics.json `wall_time_s`): "
        + ", ".join(f"{name} {m['wall_time_s'] / 60:.1f} min" for name, m in walls) + ". A resumed run's time counts"
        " its last process only; runs that shared the machine (OMP_NUM_THREADS=1, two side by side) took longer than"
        " one alone: the 90-minute fine-tune + test is `python run.py experiment=populations_cpu"
        " method=prior_anchored`, run alone with 2 threads.",
        "",
        *status_lines(out),
        "## New country: nothing known about the population's country",
        "",
        "C2 and C3 are countries no training row comes from; C1-Q2/C1-Q3 are training countries on unseen"
        " questions. 1−JSD (higher is better):",
        "",
        *use_table(out, "sample_", NEW_COUNTRY, NEW_COUNTRY_MODELS, "one_minus_jsd"),
        "",
        "EMD (W1 over option positions / (K−1); lower is better):",
        "",
        *use_table(out, "sample_", NEW_COUNTRY, NEW_COUNTRY_MODELS, "emd"),
        "",
        "## Breakdown: the country's overall shares are known, the subgroup's are predicted",
        "",
        "1−JSD:",
        "",
        *use_table(out, "sample_", BREAKDOWN, BREAKDOWN_MODELS, "one_minus_jsd"),
        "",
        "EMD:",
        "",
        *use_table(out, "sample_", BREAKDOWN, BREAKDOWN_MODELS, "emd"),
        "",
    ]
    ft, ctrl = load(out, "sample_ft"), load(out, "sample_ft_attribute_ctrl")
    if ft and ctrl:
        lines += ["## Do the attributes matter? FT − FT[attribute ctrl]", "",
                  "FT[attribute ctrl] trains and tests with prompts naming a random other subgroup of the same"
                  " attributes (`method=ft_attribute_ctrl`); the target stays the real subgroup's. 1−JSD:", "",
                  "| | " + " | ".join([*SUBSETS, "paper avg"]) + " |", "|---" + "|---:" * (len(SUBSETS) + 1) + "|"]
        for title, metrics in (("FT", ft), ("FT[attribute ctrl]", ctrl)):
            lines.append("| " + " | ".join([title, *(cell(metrics, s) for s in SUBSETS), average(metrics)]) + " |")
        diff = [f"{ft['subsets'][s]['one_minus_jsd'] - ctrl['subsets'][s]['one_minus_jsd']:+.4f}"
                if s in ft["subsets"] and s in ctrl["subsets"] else "–" for s in SUBSETS]
        lines += ["| FT − FT[attribute ctrl] | " + " | ".join(diff) + " | |", ""]
    lines += ["## Diversity across a country's subgroups: people vs model", "",
              "Per (country, question) cell of the sample, the mean pairwise Jensen–Shannon distance between its"
              " subgroups' distributions (0: every subgroup answers alike), averaged over the subset's cells."
              " A simulator that ignores the subgroup scores 0. Part of the people's diversity is sampling noise"
              " (each subgroup is a survey of n_eff respondents): the row in italics is the diversity the survey"
              " would show if every subgroup of the cell answered alike (seeded Monte Carlo, 200 draws).", "",
              "| run | " + " | ".join(SUBSETS) + " |", "|---" + "|---:" * len(SUBSETS) + "|"]
    people_done = False
    sizes = effective_sizes()
    for name, title in (("zs", "ZS"), ("ft", "FT"), ("ft_attribute_ctrl", "FT[attribute ctrl]"),
                        ("prior_anchored", "prior-anchored FT"),
                        ("breakdown_prior_anchored", "prior-anchored FT (breakdown)"),
                        ("subgroup_shift", "overall + mean subgroup shift"), ("avg_culture", "subgroup mean")):
        by_cell = cells(out, f"sample_{name}")
        values = diversity(by_cell)
        if not values:
            continue
        if not people_done:
            lines.append("| people (the survey) | " + " | ".join(
                f"{values[s][0]:.4f}" if s in values else "–" for s in SUBSETS) + " |")
            noise = noise_diversity(by_cell, sizes)
            lines.append("| *sampling noise alone (subgroups alike)* | " + " | ".join(
                f"*{noise[s]:.4f}*" if s in noise else "–" for s in SUBSETS) + " |")
            people_done = True
        lines.append(f"| {title} | " + " | ".join(f"{values[s][1]:.4f}" if s in values else "–" for s in SUBSETS)
                     + " |")
    lines.append("")
    lines += why_section(out)
    lines += paired_section(out)
    lines += ["## The baselines on every row", "",
              "The same baselines on all rows of each subset (`data=wvs_populations method=...`, no sample):", "",
              *use_table(out, "all_", [*NEW_COUNTRY, *BREAKDOWN[1:]], [], "one_minus_jsd"), ""]
    args.out_file.write_text("\n".join(lines))
    print(f"wrote {args.out_file}")


def status_lines(out: Path) -> list[str]:
    """A line naming the runs of the script that have not finished (their rows read "–")."""
    names = [f"sample_{n}" for n, _, _ in [*NEW_COUNTRY, *NEW_COUNTRY_MODELS, *BREAKDOWN, *BREAKDOWN_MODELS]]
    names += ["sample_ft_attribute_ctrl"] + [f"all_{n}" for n, _, _ in [*NEW_COUNTRY, *BREAKDOWN[1:]]]
    missing = sorted({n for n in names if load(out, n) is None})
    if not missing:
        return []
    return [f"**Status: not finished yet** (rows read \"–\"): {', '.join(missing)}. The script keeps what is done"
            " and resumes an interrupted fine-tune; run it again to complete the tables.", ""]


def best_of(out: Path, names: list[str], subsets: list[str]) -> str | None:
    """The run among ``names`` with the highest mean 1−JSD over ``subsets`` (ties: the first)."""
    scored = []
    for name in names:
        metrics = load(out, f"sample_{name}")
        if metrics and all(s in metrics["subsets"] for s in subsets):
            scored.append((np.mean([metrics["subsets"][s]["one_minus_jsd"] for s in subsets]), name))
    return max(scored)[1] if scored else None


def paired_section(out: Path) -> list[str]:
    lines = ["## Best method vs best baseline on the unseen countries (paired, clustered by question)", "",
             "For each use, the method and the baseline with the highest mean 1−JSD over the six unseen-country"
             " subsets (C2, C3), compared row by row on each (`simlab paired`); SE clustered by question.", "",
             "| use | baseline (A) | method (B) | subset | rows | questions | B − A | SE (clustered) | z |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    verdicts = []
    for use, baselines, models in (("new country", NEW_COUNTRY, NEW_COUNTRY_MODELS),
                                   ("breakdown", BREAKDOWN, BREAKDOWN_MODELS)):
        a = best_of(out, [n for n, _, _ in baselines], UNSEEN_COUNTRIES)
        b = best_of(out, [n for n, _, _ in models], UNSEEN_COUNTRIES)
        if a is None or b is None:
            continue
        z = []
        for subset in UNSEEN_COUNTRIES:
            result = compare(str(out / f"sample_{a}"), str(out / f"sample_{b}"), subset)
            z.append(result.z)
            lines.append(f"| {use} | {a} | {b} | {subset} | {result.rows} | {result.questions} | "
                         f"{result.difference:+.4f} | {result.se_questions:.4f} | {result.z:+.2f} |")
        verdicts.append(f"{use}: {b} is better than {a} on {sum(v > 2 for v in z)} of {len(z)} unseen-country subsets"
                        f" (z > 2), worse on {sum(v < -2 for v in z)} (z < −2), indistinguishable on the rest")
    return [*lines, "", *(f"- {v}." for v in verdicts), ""]


if __name__ == "__main__":
    main()
