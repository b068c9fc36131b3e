"""The report's figures (matplotlib, Agg: no display needed). Each function writes one PNG and returns its path.

They draw data in hand, never a folder: runs as :class:`Scored` (a label and the metrics.json content; a report's
completed jobs, or the summary a run hands its W&B logging as :class:`ScoredRun`), or per-label values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from simlab.metrics.registry import metric_spec  # noqa: E402


class Scored(Protocol):
    """A run a figure draws: its row label and its metrics (metrics.json's content)."""

    @property
    def label(self) -> str: ...

    @property
    def metrics(self) -> dict: ...


@dataclass(frozen=True)
class ScoredRun:
    """A run's label and summary, in hand (the report's jobs are read from their folders instead)."""

    label: str
    metrics: dict


def metric_label(metric: str) -> str:
    """A metric's axis label from its registered title, e.g. "1 − JSD (higher is better)"; an unregistered key
    is shown as written. The registry's ASCII "1-JSD" (tables, LaTeX) is drawn with a real minus sign here."""
    try:
        spec = metric_spec(metric)
    except KeyError:
        return metric.replace("_", " ")
    title = "1 − " + spec.title[2:] if spec.title.startswith("1-") else spec.title
    return f"{title} ({'higher' if spec.higher_is_better else 'lower'} is better)"


def value_limits(values, margin: float = 0.15, min_margin: float = 0.01) -> tuple[float, float] | None:
    """Axis limits that show the differences between ``values``: their range widened by ``margin`` of itself
    (at least ``min_margin``) on each side, kept inside [0, 1] when every value is (and at or above 0 when every
    value is). A bar axis from 0 would flatten the 0.01-0.05 gaps between methods that matter here; the tick
    labels say where the axis starts. None when there is no finite value (matplotlib's default then)."""
    finite = np.asarray([v for v in values if v is not None], dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return None
    low, high = float(finite.min()), float(finite.max())
    pad = max(margin * (high - low), min_margin)
    lower, upper = low - pad, high + pad
    if low >= 0.0:
        lower = max(lower, 0.0)
    if 0.0 <= low and high <= 1.0:
        upper = min(upper, 1.0)
    return lower, upper


def _fit_y(ax, series: dict[str, list[float]]) -> None:
    limits = value_limits([v for values in series.values() for v in values])
    if limits:
        ax.set_ylim(*limits)


def _grouped_bars(ax, categories: list[str], series: dict[str, list[float]]) -> None:
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(categories))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, categories, rotation=45 if len(categories) > 8 else 0,
                  ha="right" if len(categories) > 8 else "center")


def _legend(ax, n: int) -> None:
    ax.legend(fontsize=8, ncol=1 if n <= 6 else 2, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def metric_by_subset(done: Sequence[Scored], metric: str, path: Path, title: str) -> Path:
    """Fig. 2 style: one bar per run for each subset (e.g. accuracy, ZS vs FT); ``done``: completed runs."""
    subsets = list(dict.fromkeys(s for j in done for s in j.metrics["subsets"]))
    series = {j.label: [j.metrics["subsets"].get(s, {}).get(metric, np.nan) for s in subsets] for j in done}
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(subsets) + 3), 4))
    _grouped_bars(ax, subsets, series)
    _fit_y(ax, series)
    ax.set_xlabel("test subset (countries x questions)")
    ax.set_ylabel(metric_label(metric))
    ax.set_title(title)
    _legend(ax, len(series))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def diversity_scatter(points: dict[str, list[dict]], path: Path, subset_note: str) -> Path:
    """Fig. 3 style: per question, how alike the countries' answers are (mean pairwise 1-JSD) for people (x)
    vs the model (y). Points above the diagonal: the model treats countries as more alike than they are."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for label, rows in points.items():
        if rows:
            ax.scatter([r["human"] for r in rows], [r["model"] for r in rows], s=12, alpha=0.7, label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="model as diverse as people")
    all_values = [v for rows in points.values() for r in rows for v in (r["human"], r["model"])]
    low = max(0.0, min(all_values, default=0.0) - 0.02)
    ax.set_xlim(low, 1.01)  # a little past 1: points at exactly 1 stay whole
    ax.set_ylim(low, 1.01)
    ax.set_xlabel("people: mean pairwise 1 − JSD between countries")
    ax.set_ylabel("model: mean pairwise 1 − JSD between countries")
    ax.set_title(f"Similarity of answers across countries, per question\n({subset_note}; higher = less diverse)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def per_country_bars(by_job: dict[str, dict[str, dict[str, float]]], subset: str, path: Path) -> Path:
    """Figs. 3e-f / 6 / 8 style: per-country 1-JSD (top) and accuracy (bottom) on one subset, one bar per job.

    The width grows with the bars but stops at 28 inches: wider images are shrunk past reading in a viewer."""
    countries = sorted({c for per in by_job.values() for c in per})
    width = min(max(7, 0.35 * len(countries) * max(1, len(by_job)) + 3), 28)
    fig, axes = plt.subplots(2, 1, figsize=(width, 7), sharex=True)
    for ax, metric in ((axes[0], "one_minus_jsd"), (axes[1], "accuracy")):
        series = {job: [per.get(c, {}).get(metric, np.nan) for c in countries] for job, per in by_job.items()}
        _grouped_bars(ax, countries, series)
        _fit_y(ax, series)
        ax.set_ylabel(metric_label(metric))
    axes[1].set_xticks(range(len(countries)), countries, rotation=60, ha="right", fontsize=8)
    axes[1].set_xlabel("country")
    axes[0].set_title(f"Per-country scores on {subset}")
    _legend(axes[0], len(by_job))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def position_bias_bars(runs: Sequence[Scored], subset: str, path: Path, positions: int = 6) -> Path:
    """Mean predicted share per option position next to the humans' (first ``positions`` positions); ``runs``:
    completed runs (those without the subset's position bias are left out of the figure)."""
    done = [j for j in runs if subset in (j.metrics.get("position_bias") or {})]
    fig, ax = plt.subplots(figsize=(8, 4))
    letters = [chr(ord("A") + i) for i in range(positions)]
    series = {}
    if done:
        human = done[0].metrics["position_bias"][subset]["human_mean_by_position"][:positions]
        series["people"] = human + [np.nan] * (positions - len(human))
    for job in done:
        predicted = job.metrics["position_bias"][subset]["predicted_mean_by_position"][:positions]
        series[job.label] = predicted + [np.nan] * (positions - len(predicted))
    _grouped_bars(ax, letters, series)
    _fit_y(ax, series)
    ax.set_xlabel("option position (letter)")
    ax.set_ylabel("mean share")
    ax.set_title(f"Position bias on {subset}: mean share per option position")
    _legend(ax, len(series))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
