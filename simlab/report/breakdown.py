"""Row-level views of a job's predictions.jsonl: per country, per questionnaire dimension, and the diversity of
answers across countries per question (the paper's finding: models are less diverse than people)."""

from __future__ import annotations

import json
from collections import defaultdict
from itertools import combinations
from pathlib import Path

from simlab.data.files import find_data_file, read_data_text
from simlab.metrics.registry import accuracy_rows, one_minus_jsd_rows
from simlab.metrics.scoring import pad_distributions
from simlab.runs.predictions import record_population_key


def _row_scores(records: list[dict]) -> tuple[list[float], list[float]]:
    predicted, mask = pad_distributions([r["predicted"] for r in records])
    human, _ = pad_distributions([r["human"] for r in records])
    return one_minus_jsd_rows(predicted, human, mask).tolist(), accuracy_rows(predicted, human, mask).tolist()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def per_country(records: list[dict], subset: str) -> dict[str, dict[str, float]]:
    """{population: {one_minus_jsd, accuracy, n}} on one subset, sorted by name: a country's key is its name, a
    subgroup's "Kenya | sex=female, age=30-49" (subgroups are never pooled into their country)."""
    rows = [r for r in records if r["subset"] == subset]
    if not rows:
        return {}
    jsd, acc = _row_scores(rows)
    grouped: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        grouped[record_population_key(r)].append(i)
    return {
        c: {"one_minus_jsd": _mean([jsd[i] for i in idx]), "accuracy": _mean([acc[i] for i in idx]), "n": len(idx)}
        for c, idx in sorted(grouped.items())
    }


def load_dimensions(questionnaire: str | Path) -> dict[str, str]:
    """question id -> the questionnaire's ``dimension`` field."""
    path = find_data_file(questionnaire, Path())  # plain, else .xz / .gz (the shipped copy)
    entries = json.loads(read_data_text(path))
    dims = {}
    for i, entry in enumerate(entries):
        if "id" not in entry or "dimension" not in entry:
            raise ValueError(f"{path}: entry {i} lacks field {'id' if 'id' not in entry else 'dimension'!r}")
        dims[str(entry["id"])] = entry["dimension"]
    return dims


def per_dimension(records: list[dict], dimensions: dict[str, str]) -> dict[str, dict[str, dict[str, float]]]:
    """{subset: {dimension: {one_minus_jsd, n}}}; rows whose question is not in the questionnaire (e.g. Pew)
    are counted under "(not in questionnaire)" rather than dropped."""
    if not records:
        return {}
    jsd, _ = _row_scores(records)
    grouped: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for score, r in zip(jsd, records):
        grouped[r["subset"]][dimensions.get(str(r["question_id"]), "(not in questionnaire)")].append(score)
    return {
        s: {d: {"one_minus_jsd": _mean(v), "n": len(v)} for d, v in sorted(dims.items())}
        for s, dims in grouped.items()
    }


def _pairwise_similarity(distributions: list[list[float]]) -> float:
    pairs = list(combinations(range(len(distributions)), 2))
    left, mask = pad_distributions([distributions[i] for i, _ in pairs])
    right, _ = pad_distributions([distributions[j] for _, j in pairs])
    return float(one_minus_jsd_rows(left, right, mask).mean())


def _in_original_order(values: list[float], option_order: list[int] | None) -> list[float]:
    """Undo a shuffled-options row's permutation, so rows of different countries line up option by option."""
    if not option_order:
        return list(values)
    original = [0.0] * len(values)
    for new_position, old_position in enumerate(option_order):
        original[old_position] = values[new_position]
    return original


def diversity(records: list[dict], subset: str | None = None) -> list[dict]:
    """Per question (with at least two countries): the mean pairwise 1-JSD between countries' distributions,
    for the humans and for the model. Higher = more alike across countries = less diverse."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        if subset is None or r["subset"] == subset:
            grouped[(r["subset"], str(r["question_id"]))].append(r)
    out = []
    for (s, q), rows in sorted(grouped.items()):
        if len(rows) < 2:
            continue
        out.append({
            "subset": s, "question_id": q, "countries": len(rows),
            "human": _pairwise_similarity([_in_original_order(r["human"], r.get("option_order")) for r in rows]),
            "model": _pairwise_similarity([_in_original_order(r["predicted"], r.get("option_order")) for r in rows]),
        })
    return out


__all__ = ["per_country", "load_dimensions", "per_dimension", "diversity"]
