"""Compare two runs on the same (country, question) cells in two prompt languages (English vs Chinese C1-Q2).

    python -m simlab.analysis.languages --runs outputs/zeroshot/<en run> outputs/zeroshot/<zh run> \\
        --names English Chinese --subset C1-Q2 --out experiments/language.md

For the cells present in both runs: each run's mean 1-JSD and accuracy against the human distribution, and
the per-row agreement between the two runs' predictions (mean 1-JSD between them, share of rows with the same
argmax; ties count as fractions, as in the registry's accuracy). Cells present in only one run are counted and
reported, never silently dropped. Accuracy is :func:`simlab.metrics.registry.accuracy_rows`. 1-JSD is
:func:`simlab.metrics.registry.one_minus_jsd` on the saved shares renormalised to sum 1 (as scipy's ``jensenshannon``,
which this script used before, does; float32 predictions sum to 1 only within ~1e-7).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from simlab.common import commandline
from simlab.metrics.registry import accuracy_rows, one_minus_jsd
from simlab.runs.predictions import RowKey
from simlab.runs.rundir import RunDir


def load_cells(run_dir: str | Path, subset: str) -> dict[RowKey, dict]:
    """The run's prediction records of ``subset`` by (country, question); a cell seen twice is an error."""
    return RunDir(run_dir).records_by_row(subset)


def _shares(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values / values.sum()


def _argmax_agreement(p, q) -> float:
    """Registry accuracy of one row: 1 where the argmaxes agree, a fraction where either side ties."""
    p_t = torch.as_tensor(np.asarray(p, dtype=np.float64)).reshape(1, -1)
    q_t = torch.as_tensor(np.asarray(q, dtype=np.float64)).reshape(1, -1)
    return float(accuracy_rows(p_t, q_t, torch.ones(p_t.shape, dtype=torch.bool)).item())


def compare(first: dict, second: dict) -> dict:
    shared = sorted(set(first) & set(second))
    if not shared:
        raise ValueError("the two runs share no (country, question) cell")
    agreement, same_argmax, scores = [], [], {"first": [], "second": []}
    accuracy = {"first": [], "second": []}
    for key in shared:
        a, b = first[key], second[key]
        if a["letters"] != b["letters"]:
            raise ValueError(f"cell {key}: option letters differ between the runs ({a['letters']} vs {b['letters']})")
        human = np.asarray(a["human"])
        for name, record in (("first", a), ("second", b)):
            predicted = np.asarray(record["predicted"])
            scores[name].append(float(one_minus_jsd(_shares(human), _shares(predicted))))
            accuracy[name].append(_argmax_agreement(predicted, human))
        agreement.append(float(one_minus_jsd(_shares(a["predicted"]), _shares(b["predicted"]))))
        same_argmax.append(_argmax_agreement(a["predicted"], b["predicted"]))
    return {
        "cells": len(shared),
        "only_first": len(set(first) - set(second)),
        "only_second": len(set(second) - set(first)),
        "one_minus_jsd": {k: float(np.mean(v)) for k, v in scores.items()},
        "accuracy": {k: float(np.mean(v)) for k, v in accuracy.items()},
        "agreement_one_minus_jsd": float(np.mean(agreement)),
        "agreement_same_argmax": float(np.mean(same_argmax)),
    }


def markdown(result: dict, names: list[str], runs: list[str]) -> str:
    first, second = names
    return "\n".join([
        f"| | {first} | {second} |",
        "|---|---:|---:|",
        f"| 1-JSD vs human | {result['one_minus_jsd']['first']:.4f} | {result['one_minus_jsd']['second']:.4f} |",
        f"| accuracy vs human | {result['accuracy']['first']:.4f} | {result['accuracy']['second']:.4f} |",
        "",
        f"Cells in both runs: {result['cells']} (only in {first}: {result['only_first']}, only in {second}: "
        f"{result['only_second']}). Agreement between the two languages' predictions: mean 1-JSD "
        f"{result['agreement_one_minus_jsd']:.4f}, same argmax {result['agreement_same_argmax']:.4f}.",
        f"Runs: {runs[0]} ({first}), {runs[1]} ({second}).",
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = commandline.parser("compare-languages", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs=2, required=True, help="two run directories with predictions.jsonl")
    parser.add_argument("--names", nargs=2, default=["English", "Chinese"])
    parser.add_argument("--subset", default="C1-Q2")
    parser.add_argument("--out", help="write the markdown table here (and a .json beside it)")
    args = parser.parse_args(argv)
    result = compare(*(load_cells(run, args.subset) for run in args.runs))
    text = markdown(result, args.names, args.runs)
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
