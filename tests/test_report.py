"""The report's pieces on made-up runs: labels, table cells, breakdowns computed by hand."""

import json
import math

import pytest

from simlab.job import write_status
from simlab.report import collect_jobs, metric_table
from simlab.report.breakdown import diversity, per_country, per_dimension


def make_run(folder, overrides, subsets, status="completed", records=()):
    folder.mkdir(parents=True)
    write_status(folder, status, overrides, **({"error": "RuntimeError: boom"} if status == "failed" else {}))
    if status == "completed":
        metrics = {"task": "zeroshot", "subsets": {s: {"one_minus_jsd": v, "emd": 0.1, "accuracy": 0.5, "n": 2}
                                                   for s, v in subsets.items()}}
        (folder / "metrics.json").write_text(json.dumps(metrics))
        (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_rows_are_labelled_by_the_overrides_that_differ(tmp_path):
    make_run(tmp_path / "0_method=zs", ["method=zs", "logger=csv", "adapter=/a"], {"C2-Q1": 0.7})
    make_run(tmp_path / "1_method=ft", ["method=ft", "logger=csv", "adapter=/b"], {}, status="failed")
    jobs = collect_jobs([tmp_path])
    assert [j.label for j in jobs] == ["method=zs", "method=ft"]
    header, rows = metric_table(jobs, "one_minus_jsd")
    assert header == ["row", "C2-Q1"]
    assert rows == [["method=zs", "0.7000"], ["method=ft", "failed"]]


def test_a_folder_without_runs_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run folders"):
        collect_jobs([tmp_path])


def rec(country, question, human, predicted, subset="S", **extra):
    return {"subset": subset, "country": country, "question_id": question, "human": human, "predicted": predicted,
            **extra}


def test_diversity_is_one_for_identical_countries_and_undoes_shuffles():
    records = [
        rec("A", "1", [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]),
        rec("B", "1", [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]),
        # the same distributions as country B's model, shown in shuffled order: C B A
        rec("C", "1", [0.0, 0.0, 1.0], [0.5, 0.3, 0.2], option_order=[2, 1, 0]),
        rec("D", "2", [1.0, 0.0], [1.0, 0.0]),  # a question with one country has no pairs
    ]
    (point,) = diversity(records)
    assert point["question_id"] == "1" and point["countries"] == 3
    assert point["model"] == pytest.approx(1.0)  # every country's model answer is the same once unshuffled
    # people: A vs B, A vs C(=B), B vs C(=B) -> two pairs at 1 - JSD(A, B) and one identical pair
    from scipy.spatial.distance import jensenshannon

    expected = (2 * (1 - jensenshannon([0.5, 0.5, 0.0], [1.0, 0.0, 0.0])) + 1.0) / 3
    assert point["human"] == pytest.approx(expected)


def test_per_country_and_per_dimension_means():
    records = [
        rec("A", "1", [1.0, 0.0], [1.0, 0.0]),  # perfect, majority right
        rec("A", "2", [1.0, 0.0], [0.0, 1.0]),  # disjoint: 1-JSD = 1 - sqrt(ln 2) (natural log), majority wrong
        rec("B", "1", [0.0, 1.0], [0.0, 1.0]),
        rec("B", "9", [0.0, 1.0], [0.0, 1.0]),
    ]
    disjoint = 1 - math.sqrt(math.log(2))
    countries = per_country(records, "S")
    assert countries["A"] == pytest.approx({"one_minus_jsd": (1 + disjoint) / 2, "accuracy": 0.5, "n": 2})
    assert countries["B"] == pytest.approx({"one_minus_jsd": 1.0, "accuracy": 1.0, "n": 2})
    dims = per_dimension(records, {"1": "values", "2": "values"})["S"]
    assert dims["values"] == pytest.approx({"one_minus_jsd": (2 + disjoint) / 3, "n": 3})
    assert dims["(not in questionnaire)"] == pytest.approx({"one_minus_jsd": 1.0, "n": 1})
