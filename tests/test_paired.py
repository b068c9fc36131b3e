"""simlab paired: B − A per row on the same rows, its question-clustered standard error, row exclusion."""

import json
import math

import numpy as np
import pytest

from simlab.analysis.paired import compare, paired_difference
from simlab.cli import main as simlab_cli
from simlab.metrics.registry import one_minus_jsd

HUMAN = {"q1": [0.7, 0.2, 0.1], "q2": [0.1, 0.6, 0.3], "q3": [0.25, 0.25, 0.5]}


def write_run(folder, predicted: dict, subset="C1-Q2"):
    folder.mkdir()
    with open(folder / "predictions.jsonl", "w") as handle:
        for (country, question), probs in predicted.items():
            handle.write(json.dumps({"subset": subset, "country": country, "question_id": question,
                                     "human": HUMAN[question], "predicted": probs}) + "\n")
    return folder


def runs(tmp_path):
    rng = np.random.default_rng(0)
    a, b = {}, {}
    for country in ("DE", "FR", "JP", "BR"):
        for question, human in HUMAN.items():
            noise = rng.dirichlet([1, 1, 1])
            a[country, question] = list(0.5 * noise + 0.5 / 3)
            b[country, question] = list(0.5 * np.asarray(human) + 0.5 * noise)  # closer to the people
    return write_run(tmp_path / "a", a), write_run(tmp_path / "b", b), a, b


def test_the_difference_and_its_clustered_error_by_hand(tmp_path):
    run_a, run_b, a, b = runs(tmp_path)
    result = compare(str(run_a), str(run_b), "C1-Q2")
    diffs = {row: float(one_minus_jsd(np.asarray(HUMAN[row[1]]), np.asarray(b[row])))
             - float(one_minus_jsd(np.asarray(HUMAN[row[1]]), np.asarray(a[row]))) for row in a}
    mean = sum(diffs.values()) / len(diffs)
    assert result.rows == 12 and result.questions == 3
    assert result.difference == pytest.approx(mean, abs=1e-12) and result.difference > 0
    assert result.se_rows == pytest.approx(np.std(list(diffs.values()), ddof=1) / math.sqrt(12), rel=1e-9)
    sums = [sum(d - mean for (c, q), d in diffs.items() if q == question) for question in HUMAN]
    assert result.se_questions == pytest.approx(math.sqrt(sum(s * s for s in sums) * 3 / 2) / 12, rel=1e-9)
    assert result.z == pytest.approx(mean / result.se_questions)
    swapped = compare(str(run_b), str(run_a), "C1-Q2")
    assert swapped.difference == pytest.approx(-result.difference)
    assert swapped.questions_better == 3 - result.questions_better


def test_excluded_rows_are_left_out_and_other_rows_are_refused(tmp_path):
    run_a, run_b, a, b = runs(tmp_path)
    sample = write_run(tmp_path / "sample", {row: a[row] for row in list(a)[:5]})
    result = compare(str(run_a), str(run_b), "C1-Q2", exclude_rows_of=str(sample))
    assert result.rows == 7
    missing = write_run(tmp_path / "fewer", {row: b[row] for row in list(b)[1:]})
    with pytest.raises(ValueError, match="different rows"):
        compare(str(run_a), str(missing), "C1-Q2")
    with pytest.raises(ValueError, match="no predictions for subset"):
        compare(str(run_a), str(run_b), "C2-Q1")
    with pytest.raises(KeyError, match="predicted_uncalibrated"):
        compare(str(run_a), str(run_b), "C1-Q2", key="predicted_uncalibrated")


def test_a_lower_is_better_metric_counts_questions_the_other_way(tmp_path):
    same = {("DE", "q1"): 0.5, ("FR", "q1"): 0.5, ("DE", "q2"): 0.2, ("FR", "q2"): 0.4}
    lower = {row: v - 0.1 for row, v in same.items()}
    assert paired_difference(same, lower, "emd").questions_better == 2  # EMD went down: B is better
    assert paired_difference(same, lower, "one_minus_jsd").questions_better == 0


def test_simlab_paired_prints_the_comparison(tmp_path, capsys):
    run_a, run_b, _, _ = runs(tmp_path)
    assert simlab_cli(["paired", str(run_a), str(run_b), "--subset", "C1-Q2"]) == 0
    out = capsys.readouterr().out
    assert "12 rows (3 questions)" in out and "clustered by question" in out
