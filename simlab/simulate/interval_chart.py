"""The chart of a simulation with prediction intervals: one panel per answer option, a dot per country (or
population) at its simulated share with whiskers to its interval. Stacked bars cannot carry an interval on each
segment (a segment's edge is a cumulative share), so with intervals the chart is a dot plot; without, the stacked
bars of :mod:`simlab.simulate.outputs` are unchanged."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple


class Slot(NamedTuple):
    """One line of the chart, top to bottom: a country or population (``shares`` per option, the bounds NaN where
    observed), or a heading (a country above its populations: ``shares`` None)."""

    name: str
    shares: Sequence[float] | None = None
    lower: Sequence[float] | None = None
    upper: Sequence[float] | None = None


def plot_intervals(slots: Sequence[Slot], options: Sequence[str], colors: Sequence, title: str, footer: str,
                   xlabel: str, path: str | Path) -> Path:
    """Dots and whiskers per option panel (at most 4 panels a row); an observed share (no bounds) is a hollow dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = min(len(options), 4)
    rows = math.ceil(len(options) / columns)
    height = 1.9 + rows * (0.6 + 0.26 * len(slots)) + 0.22 * title.count("\n") + 0.16 * footer.count("\n")
    fig, axes = plt.subplots(rows, columns, figsize=(10, height), sharey=True, squeeze=False, layout="constrained")
    fig.get_layout_engine().set(wspace=0.08)  # room between a panel's "100%" and the next one's "0%"
    y = np.arange(len(slots))[::-1]
    for k, ax in enumerate(axes.flat):
        if k >= len(options):
            ax.axis("off")
            continue
        lines = [(position, slot) for position, slot in zip(y, slots) if slot.shares is not None]
        shares = np.array([slot.shares[k] for _, slot in lines], dtype=float)
        low = np.array([slot.lower[k] for _, slot in lines], dtype=float)
        high = np.array([slot.upper[k] for _, slot in lines], dtype=float)
        at = np.array([position for position, _ in lines])
        bounded = ~(np.isnan(low) | np.isnan(high))
        if bounded.any():
            ax.errorbar(shares[bounded], at[bounded], fmt="o", color=colors[k], markersize=4, capsize=2.5,
                        elinewidth=1.3, xerr=[np.maximum(shares - low, 0)[bounded],
                                              np.maximum(high - shares, 0)[bounded]])
        if (~bounded).any():
            ax.plot(shares[~bounded], at[~bounded], "o", markersize=5, markerfacecolor="white", color=colors[k])
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.6, len(slots) - 0.4)
        ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
        ax.set_xticks([0, 0.5, 1])
        ax.grid(axis="x", color="0.9")
        ax.set_title("\n".join(textwrap.wrap(options[k], 28)), fontsize=9, loc="left")
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_yticks(y, [slot.name for slot in slots], fontsize=8)
        for tick, slot in zip(ax.get_yticklabels(), slots):
            if slot.shares is None:
                tick.set_fontweight("bold")
    fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    fig.supxlabel(f"{xlabel}\n{footer}", x=0.01, ha="left", fontsize=7, color="0.3")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
