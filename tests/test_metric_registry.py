"""The metric registry: a metric registered in one place reaches the collection, metrics.json, results.md, the
report and compare_runs; the registry's directions; the divergences against scipy / hand-computed values; the
noise ceiling unchanged by the move to the one 1-JSD implementation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from simlab.analysis.ceiling import expected_one_minus_jsd, noise_ceiling
from simlab.analysis.post_test import analyse
from simlab.data.rows import SurveyRow
from simlab.metrics.divergences import js_divergence_rows, kl_rows, w1_rows
from simlab.metrics.registry import (
    metric_names,
    metric_spec,
    one_minus_jsd,
    register_metric,
    registered_metrics,
    survey_metrics,
    unregister_metric,
)
from simlab.metrics.scoring import score_subsets
from simlab.report import collect_jobs, metric_table
from simlab.report.build import write_report
from simlab.report.compare import comparison_table
from simlab.runs.metrics_file import summarize
from simlab.runs.predictions import write_predictions
from simlab.runs.results_table import results_table
from simlab.runs.status import write_status

FIVE = ("one_minus_jsd", "emd", "emd_paper", "accuracy", "kl")


def _row(target, n=None, index=0, subset="S1", country="Andorra") -> SurveyRow:
    letters = tuple("ABCDEFGHIJ"[: len(target)])
    return SurveyRow(
        subset=subset, question_id=str(index), country=country, instruction="", question="",
        options=tuple(f"({letter})x" for letter in letters), letters=letters, target=tuple(target), n=n,
        source="memory", index=index,
    )


def total_variation_rows(preds, target, mask):
    """Half the L1 distance between the two distributions over the real options."""
    gap = (preds - target).abs().masked_fill(~mask, 0.0)
    return 0.5 * gap.sum(dim=-1)


@pytest.fixture
def total_variation():
    """'tv' registered as docs/EXTENDING.md registers it, and unregistered afterwards."""
    register_metric("tv", title="TV", higher_is_better=False, in_average=True, in_report=True,
                    description="total variation distance, half the L1 distance.")(total_variation_rows)
    yield "tv"
    unregister_metric("tv")


ROWS = {
    "S1": [_row([0.5, 0.5], 100, 0), _row([0.2, 0.3, 0.5], 50, 1, country="Belize")],
    "S2": [_row([1.0, 0.0, 0.0, 0.0], 20, 2)],
}
PREDICTED = {"S1": [[0.25, 0.75], [0.5, 0.3, 0.2]], "S2": [[0.25, 0.25, 0.25, 0.25]]}
TV = {"S1": (0.25 + 0.3) / 2, "S2": 0.75}


def test_the_registry_is_in_the_tables_order_with_its_directions():
    assert metric_names() == FIVE
    assert metric_names(in_average=True) == ("one_minus_jsd", "emd", "accuracy")
    assert metric_names(in_report=True) == ("one_minus_jsd", "emd", "accuracy")
    directions = {spec.name: spec.higher_is_better for spec in registered_metrics()}
    assert directions == {"one_minus_jsd": True, "accuracy": True, "emd": False, "emd_paper": False, "kl": False}
    assert metric_spec("one_minus_jsd").table_title == "1-JSD (higher is better)"
    assert metric_spec("emd").table_title == "EMD (lower is better)"
    collection = survey_metrics()
    assert {name: m.higher_is_better for name, m in collection.items()} == directions


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register_metric("emd", title="EMD", higher_is_better=False)(total_variation_rows)
    with pytest.raises(ValueError, match="identifier"):
        register_metric("total variation", title="TV", higher_is_better=False)
    with pytest.raises(KeyError):
        unregister_metric("not_a_metric")


def test_the_five_metrics_table_is_unchanged():
    """results.md's header and average line as they were before the registry (byte for byte), and its footnote
    (which since gained accuracy's tie rule)."""
    summary = summarize(score_subsets(ROWS, PREDICTED), ["S1", "S2"], task="baseline", baseline="x")
    text = results_table(summary)
    lines = text.splitlines()
    assert lines[2] == "| subset | n | 1-JSD | EMD | EMD (paper) | accuracy | KL | ceiling 1-JSD |"
    assert lines[3] == "|---|---:|---:|---:|---:|---:|---:|---:|"
    average = summary["paper_average"]
    assert lines[6] == (f"| paper average (S1, S2) | | {average['one_minus_jsd']:.4f} | {average['emd']:.4f} | | "
                        f"{average['accuracy']:.4f} | | |")
    assert lines[-1] == (
        "1-JSD: 1 - Jensen-Shannon distance (natural log). EMD: W1 over option positions / (K-1). "
        "EMD (paper): the reference code's scipy wasserstein_distance on probability values, for comparison "
        "only. accuracy: the predicted argmax vs the human majority; ties count as fractions (expected accuracy "
        "under a random tie-break; options within 1e-12 relative of the maximum tie), so a uniform guess on k "
        "options scores 1/k. Ceiling: expected 1-JSD of a perfect simulator against a survey of the same size "
        "(rows with n).")
    assert set(summary["subsets"]["S1"]) == {"n", *FIVE}


def test_a_registered_metric_reaches_every_output(total_variation, tmp_path):
    assert metric_names()[-1] == "tv"
    collection = survey_metrics()
    assert "tv" in collection and collection["tv"].higher_is_better is False

    scores = score_subsets(ROWS, PREDICTED)  # metrics.json "subsets" (and W&B test/<subset>/tv)
    for subset, expected in TV.items():
        assert scores[subset]["tv"] == pytest.approx(expected, abs=1e-12)
    summary = summarize(scores, ["S1", "S2"], task="baseline", baseline="x")
    assert summary["paper_average"]["tv"] == pytest.approx((TV["S1"] + TV["S2"]) / 2, abs=1e-12)
    summary.update(analyse(ROWS, PREDICTED, ["S1", "S2"], ceiling_samples=10))

    lines = results_table(summary).splitlines()  # analyse's effective respondents: the last column
    assert lines[2] == "| subset | n | 1-JSD | EMD | EMD (paper) | accuracy | KL | TV | ceiling 1-JSD | respondents |"
    assert lines[3] == "|---|---:|" + "---:|" * 8
    assert lines[4].startswith("| S1 | 2 | ") and f"| {TV['S1']:.4f} | " in lines[4]
    assert lines[6].endswith(f"| {(TV['S1'] + TV['S2']) / 2:.4f} | | |")
    assert "TV: total variation distance, half the L1 distance. Ceiling:" in lines[-1]

    # a summary written before tv was registered shows "-" in its column
    old = {"subsets": {"S1": {"n": 2, **{m: 0.5 for m in FIVE}}}}
    assert results_table(old).splitlines()[4] == "| S1 | 2 | 0.5000 | 0.5000 | 0.5000 | 0.5000 | 0.5000 | - |  |"

    table = comparison_table([summary], ["run"], ["tv"])
    assert table.splitlines()[0] == "| subset | n | TV run |"

    run = tmp_path / "runs" / "0_baseline=x"
    run.mkdir(parents=True)
    write_predictions(run / "predictions.jsonl", ROWS, PREDICTED)
    (run / "metrics.json").write_text(json.dumps(summary), encoding="utf-8")
    write_status(run, "completed", ["baseline=x"])
    jobs = collect_jobs([run])
    header, rows = metric_table(jobs, "tv")
    assert header == ["row", "S1", "S2", "avg"]
    assert rows[0][1:] == [f"{TV['S1']:.4f}", f"{TV['S2']:.4f}", f"{(TV['S1'] + TV['S2']) / 2:.4f}"]
    report = write_report(jobs, tmp_path / "report", subset="S1").read_text(encoding="utf-8")
    assert "## TV (lower is better)" in report and "## 1-JSD (higher is better)" in report
    csv_lines = (tmp_path / "report" / "tables.csv").read_text(encoding="utf-8").splitlines()
    assert sum(",tv," in line for line in csv_lines) == 3  # S1, S2, avg
    assert "TV (lower is better)" in (tmp_path / "report" / "tables.tex").read_text(encoding="utf-8")


def test_the_fixture_leaves_the_registry_as_it_was():
    assert metric_names() == FIVE and "tv" not in survey_metrics()


# ------------------------------------------------------------------------------------------------- divergences
EXAMPLES = [
    ([0.5, 0.5], [0.9, 0.1]),
    ([0.2, 0.3, 0.5], [0.5, 0.3, 0.2]),
    ([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]),
    ([0.1, 0.0, 0.6, 0.3], [0.25, 0.25, 0.25, 0.25]),
]


def _padded(pairs):
    width = max(len(p) for p, _ in pairs)
    p = torch.zeros(len(pairs), width, dtype=torch.float64)
    q = torch.zeros_like(p)
    mask = torch.zeros(len(pairs), width, dtype=torch.bool)
    for i, (a, b) in enumerate(pairs):
        p[i, : len(a)], q[i, : len(b)] = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
        mask[i, : len(a)] = True
    return p, q, mask


def test_js_divergence_is_scipys_jensenshannon_squared():
    p, q, mask = _padded(EXAMPLES)
    expected = [jensenshannon(a, b) ** 2 for a, b in EXAMPLES]  # natural log
    assert js_divergence_rows(p, q, mask).tolist() == pytest.approx(expected, abs=1e-15)
    assert [float(one_minus_jsd(a, b)) for a, b in EXAMPLES] == pytest.approx(
        [1 - jensenshannon(a, b) for a, b in EXAMPLES], abs=1e-12)
    # one_minus_jsd broadcasts along the last axis, as the ceiling uses it
    batch = one_minus_jsd(np.array([0.2, 0.3, 0.5]), np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]]))
    assert batch.shape == (2,) and batch[1] == 1.0


def test_w1_by_hand():
    """|CDF gaps| summed, over k - 1: [.5,.5] vs [.9,.1] moves 0.4 by one step; [1,0,0,0] vs [0,0,0,1] moves
    all the mass three steps; [.2,.3,.5] vs [.5,.3,.2]: gaps 0.3 and 0.3 over 2; [.1,0,.6,.3] vs uniform: CDFs
    (.1,.1,.7) and (.25,.5,.75), gaps .15, .4, .05 over 3."""
    p, q, mask = _padded(EXAMPLES)
    expected = [0.4, 0.3, 1.0, (0.15 + 0.4 + 0.05) / 3]
    assert w1_rows(p, q, mask).tolist() == pytest.approx(expected, abs=1e-15)


def test_kl_rows_by_hand():
    p, q, mask = _padded(EXAMPLES[:2])
    expected = [0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1),
                0.2 * np.log(0.2 / 0.5) + 0.5 * np.log(0.5 / 0.2)]
    assert kl_rows(p, q, mask).tolist() == pytest.approx(expected, abs=1e-15)


# ------------------------------------------------------------------------------------------------ the ceiling
CEILING_ROWS = [_row([0.2, 0.8], 10, 0), _row([0.1, 0.3, 0.6], None, 1), _row([0.25, 0.25, 0.5], 40, 2),
                _row([0.05, 0.0, 0.15, 0.3, 0.5], 500, 3), _row([0.5, 0.5], None, 4)]


def test_ceiling_numbers_are_those_of_the_numpy_implementation():
    """Computed at the commit before the registry, with the numpy 1-JSD the ceiling had then. The torch
    implementation takes log p - log m where numpy took log(p / m): the sums agree to a few 1e-16 here (and to
    ~2e-12 on the WVS test subsets, where samples of big surveys lie very close to p)."""
    assert noise_ceiling(CEILING_ROWS, samples=200, seed=0)["one_minus_jsd"] == pytest.approx(
        0.9355096052287989, abs=1e-14)
    assert noise_ceiling(CEILING_ROWS, samples=37, seed=5)["one_minus_jsd"] == pytest.approx(
        0.9320694434396689, abs=1e-14)
    assert expected_one_minus_jsd([0.1, 0.2, 0.0, 0.7], 25) == pytest.approx(0.9031387934150472, abs=1e-14)
    assert expected_one_minus_jsd([0.1, 0.2, 0.0, 0.7], 3, samples=1000) == pytest.approx(0.6938709115074811,
                                                                                         abs=1e-14)


def test_ceiling_rows_scored_together_equal_one_by_one():
    rng = np.random.default_rng(0)
    one_by_one = [expected_one_minus_jsd(r.target, r.n, samples=50, rng=rng) for r in CEILING_ROWS if r.n]
    together = noise_ceiling(CEILING_ROWS, samples=50, seed=0)
    assert together["one_minus_jsd"] == pytest.approx(np.mean(one_by_one), abs=1e-15)


WVS_CEILING = {  # noise_ceiling(rows, samples=200, seed=0) per test subset of wvs7/sft_wvs_test.json, numpy version
    "C1-Q3": 0.9810435739877592, "C2-Q1": 0.9836325473620525, "C2-Q3": 0.9807026638903835,
    "C3-Q1": 0.9842473745233452, "C3-Q3": 0.9814518206890288,
}


def test_ceiling_on_the_wvs_test_subsets_is_unchanged(shared_data):
    from simlab.data import SurveyDataModule

    names = {"test_1": "C1-Q3", "test_2": "C2-Q1", "test_3": "C2-Q2", "test_4": "C2-Q3", "test_5": "C3-Q1",
             "test_6": "C3-Q2", "test_7": "C3-Q3"}
    data = SurveyDataModule(None, files=["wvs7/sft_wvs_test.json"], subset_names=names, train_subset=None,
                            valid_subset=None, test_subsets=list(WVS_CEILING), root=str(shared_data))
    data.setup()
    for subset, expected in WVS_CEILING.items():
        assert noise_ceiling(data.rows[subset], samples=200, seed=0)["one_minus_jsd"] == pytest.approx(
            expected, abs=5e-12), subset
