"""The report figures' axes: limits from the data (not from 0) and labels from the metric registry."""

from pathlib import Path

import numpy as np
import pytest

from simlab.report import figures
from simlab.report.collect import Job


def test_value_limits_show_the_differences():
    low, high = figures.value_limits([0.6, 0.72, 0.8])
    assert low == pytest.approx(0.57) and high == pytest.approx(0.83)  # 15% of the 0.2 range on each side
    low, high = figures.value_limits([0.731, 0.732])  # a tiny range still gets the 0.01 margin
    assert low == pytest.approx(0.721) and high == pytest.approx(0.742)


def test_value_limits_stay_in_the_values_range_of_definition():
    assert figures.value_limits([0.0, 0.5, 1.0]) == (0.0, 1.0)  # shares / 1-JSD / accuracy: inside [0, 1]
    low, high = figures.value_limits([0.2, 1.4])  # KL: at or above 0, no upper bound
    assert low == pytest.approx(0.02) and high == pytest.approx(1.58)
    low, _ = figures.value_limits([0.001, 0.9])
    assert low == 0.0
    low, high = figures.value_limits([-0.5, 0.5])  # a signed quantity is not clipped
    assert low == pytest.approx(-0.65) and high == pytest.approx(0.65)


def test_value_limits_skip_missing_values():
    assert figures.value_limits([np.nan, None, 0.6, 0.8, float("inf")]) == pytest.approx((0.57, 0.83))
    assert figures.value_limits([np.nan, None]) is None
    assert figures.value_limits([]) is None


def test_metric_labels_come_from_the_registry():
    assert figures.metric_label("one_minus_jsd") == "1 − JSD (higher is better)"
    assert figures.metric_label("accuracy") == "accuracy (higher is better)"
    assert figures.metric_label("emd") == "EMD (lower is better)"
    assert figures.metric_label("not_registered") == "not registered"


@pytest.fixture
def drawn(monkeypatch):
    """The figures the functions close, kept open for inspection."""
    kept, close = [], figures.plt.close
    monkeypatch.setattr(figures.plt, "close", kept.append)
    yield kept
    for fig in kept:
        close(fig)


def _job(label: str, values: dict[str, float]) -> Job:
    metrics = {"subsets": {s: {"one_minus_jsd": v, "accuracy": v / 2} for s, v in values.items()}}
    return Job(path=Path(label), status="completed", overrides={}, metrics=metrics, label=label)


def test_metric_by_subset_axis_starts_near_the_data(tmp_path, drawn):
    jobs = [_job("uniform", {"S1": 0.70, "S2": 0.75}), _job("model", {"S1": 0.72, "S2": 0.74})]
    path = figures.metric_by_subset(jobs, "one_minus_jsd", tmp_path / "f.png", "1 − JSD per subset")
    assert path.is_file()
    (ax,) = [a for a in drawn[0].axes if a.get_ylabel()]
    assert ax.get_ylabel() == "1 − JSD (higher is better)"
    assert ax.get_ylim() == pytest.approx((0.69, 0.76))  # not from 0: the 0.02 gaps show


def test_per_country_bars_fit_each_metric(tmp_path, drawn):
    by_job = {"a": {"Chile": {"one_minus_jsd": 0.8, "accuracy": 0.1}, "Peru": {"one_minus_jsd": 0.9, "accuracy": 1.0}}}
    figures.per_country_bars(by_job, "S1", tmp_path / "c.png")
    top, bottom = drawn[0].axes[:2]
    assert top.get_ylabel().startswith("1 − JSD") and top.get_ylim() == pytest.approx((0.785, 0.915))
    assert bottom.get_ylabel().startswith("accuracy") and bottom.get_ylim() == pytest.approx((0.0, 1.0))
