"""The share of the gap between the best baseline and the sampling-noise ceiling that a method closes."""

from __future__ import annotations

import json

import pytest

from simlab import cli
from simlab.analysis.gap import overall, share_closed, subset_gaps


def metrics(scores: dict[str, float], rows: int = 10, ceiling: dict[str, float] | None = None, **info) -> dict:
    out = {**info, "subsets": {s: {"one_minus_jsd": v, "emd": 0.1, "n": rows} for s, v in scores.items()}}
    if ceiling is not None:
        out["noise_ceiling"] = {s: {"one_minus_jsd": v, "rows_with_n": rows} for s, v in ceiling.items()}
    return out


def test_share_closed_is_the_methods_part_of_the_distance_from_the_best_baseline_to_the_ceiling():
    assert share_closed(0.80, 0.70, 0.90) == pytest.approx(0.5)
    assert share_closed(0.90, 0.70, 0.90) == pytest.approx(1.0)
    assert share_closed(0.65, 0.70, 0.90) == pytest.approx(-0.25)  # worse than the best baseline
    assert share_closed(0.80, 0.70, None) is None and share_closed(0.80, 0.90, 0.90) is None


def test_the_best_baseline_is_chosen_per_subset_and_the_ceiling_is_the_rows():
    method = metrics({"C2-Q1": 0.80, "C3-Q3": 0.72}, task="finetune", ceiling={"C2-Q1": 0.90, "C3-Q3": 0.80})
    baselines = {"uniform": metrics({"C2-Q1": 0.60, "C3-Q3": 0.70}),
                 "subgroup_shift": metrics({"C2-Q1": 0.70, "C3-Q3": 0.64})}
    gaps = subset_gaps(method, baselines)
    assert [(g.subset, g.best_baseline, g.best) for g in gaps] == [("C2-Q1", "subgroup_shift", 0.70),
                                                                  ("C3-Q3", "uniform", 0.70)]
    assert [g.share for g in gaps] == pytest.approx([0.5, 0.2])
    assert overall(gaps) == pytest.approx((1.52 - 1.40) / (1.70 - 1.40))
    assert [g.subset for g in subset_gaps(method, baselines, ["C3-Q3"])] == ["C3-Q3"]
    with pytest.raises(ValueError, match="C2-Q1: method scored 10 rows, baseline other 9"):
        subset_gaps(method, {"other": metrics({"C2-Q1": 0.5, "C3-Q3": 0.5}, rows=9)})
    with pytest.raises(ValueError, match="baseline uniform has no scores for subset 'C1-Q2'"):
        subset_gaps(metrics({"C1-Q2": 0.8}), {"uniform": metrics({"C2-Q1": 0.6})})
    assert subset_gaps(metrics({"C2-Q1": 0.8}), {"uniform": metrics({"C2-Q1": 0.6})})[0].share is None  # no ceiling


def test_simlab_gap_prints_the_table_of_each_run(tmp_path, capsys):
    def run(name, content):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps(content), encoding="utf-8")
        return str(folder)

    ft = run("ft", metrics({"C2-Q1": 0.80}, task="finetune", ceiling={"C2-Q1": 0.90}))
    shift = run("shift", metrics({"C2-Q1": 0.70}, baseline="subgroup_shift"))
    assert cli.main(["gap", ft, "--baselines", shift]) == 0
    out = capsys.readouterr().out
    assert f"finetune ({ft})" in out and f"subgroup_shift ({shift})" in out
    assert "C2-Q1" in out and "0.500" in out and "all subsets (summed gap): 0.500" in out
    assert cli.main(["gap", ft, "--baselines", str(tmp_path / "missing")]) == 2
    assert "metrics.json does not exist" in capsys.readouterr().err
