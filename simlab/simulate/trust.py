"""How far to trust a simulated share: the prediction interval saved with the adapter on every simulated share
(``calibration.json``, :mod:`simlab.simulator.intervals`), and what the simulator was worth in respondents on the
closest setting its run evaluated (``<run dir>/metrics.json``'s ``effective_respondents``,
:mod:`simlab.analysis.respondents`; the run folder is the adapter's parent, ``<run dir>/adapter``).

**The closest evaluated setting.** A simulated question is new: neither trained on (Q1) nor one of the calibration
questions (Q2), like the held-out test questions Q3. A country of the adapter's training group (C1: the group of its
training subset, C1-Q1) gets the k of C1-Q3 (a training country, a new question). Any other country gets the k of the
unseen-country subsets its own rows were tested in (C2-Q3 and/or C3-Q3: an unseen country, a new question), the
median when it is in both; a country in no WVS group gets the median over every unseen group's Q3. A subgroup takes
its country's. The record names the subset(s) each k came from, and what was missing.

**Intervals belong to the calibrated simulator** they were fitted for (after its temperature): a simulation at
another temperature (``simulate.calibrated=false``, or ``Simulator(..., temperature=...)`` with another value) gets
none, and the record says why. An observed cell (surveyed, not simulated) has no interval (``lower``/``upper`` empty).
Without intervals the CSV, markdown and charts are exactly as before; simulation.meta.json says why there are none.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simlab.simulator.bundle import CALIBRATION_FILE

log = logging.getLogger(__name__)

NO_INTERVALS = "no intervals saved with this adapter"
NEW_QUESTIONS = "Q3"  # the held-out test questions: what a new question is like
DEFAULT_TRAIN_GROUP = "C1"  # the paper's split: the adapter trains on C1-Q1
RULE = ("a simulated question is new (like the held-out test questions Q3): a country of the training group gets "
        "the k of <training group>-Q3; another country the k of the unseen-country Q3 subsets it is in (the median "
        "when several; every unseen group's Q3 when it is in none); a subgroup its country's")


def simulation_intervals(loaded, temperature: float | None):
    """(the intervals to apply or None, the record for simulation.meta.json: the fit, its level and score, and
    where it came from; or a ``note`` saying why there are none)."""
    if not loaded.adapter:
        return None, {"note": "no adapter (the bare model): no intervals"}
    fitted = loaded.intervals
    if fitted is None:
        return None, {"note": NO_INTERVALS}
    saved = loaded.temperature
    if temperature is None or saved is None or not math.isclose(temperature, saved):
        return None, {"note": f"the intervals saved with this adapter were fitted for its calibrated simulator "
                              f"(temperature {saved}); this simulation uses temperature {temperature}: none shown",
                      "saved": fitted.to_dict()}
    return fitted, {**fitted.to_dict(), "from": str(Path(loaded.adapter) / CALIBRATION_FILE),
                    "cells": "every simulated share; an observed cell has none"}


def training_group(bundle) -> tuple[str, str]:
    """(the adapter's training country group, how it is known): the group of simulator.json's training subset
    (``C1-Q1`` -> C1), else the paper's C1."""
    subset = (((bundle.manifest or {}).get("training_data") or {}).get("subset")) if bundle is not None else None
    match = re.fullmatch(r"(C\d+)-Q\d+", str(subset or ""))
    if match:
        return match.group(1), f"simulator.json's training subset {subset}"
    return DEFAULT_TRAIN_GROUP, "assumed (simulator.json names no training subset of the C/Q split)"


def closest_subsets(groups: Sequence[str], train_group: str, all_groups: Sequence[str]) -> tuple[list[str], str]:
    """(the subsets whose k stands for a new question asked of a country in ``groups``, what the setting is)."""
    if train_group in groups:
        return [f"{train_group}-{NEW_QUESTIONS}"], "a training country, a new question"
    unseen = [g for g in groups if g != train_group] or [g for g in all_groups if g != train_group]
    return [f"{g}-{NEW_QUESTIONS}" for g in unseen], "an unseen country, a new question"


def respondents_record(adapter: str | None, countries: Sequence[str],
                       groups: Callable[[], Mapping[str, Sequence[str]]], train_group: tuple[str, str],
                       all_groups: Sequence[str]) -> dict:
    """simulation.meta.json's ``effective_respondents``: per country the k of its closest evaluated setting
    (module docstring), the subsets it came from and the file; or a ``note`` saying why there is none.
    ``groups()``: each country's WVS groups (read only when the run measured k)."""
    from simlab.runs.rundir import RunDir

    if not adapter:
        return {"note": "no adapter (the bare model): no evaluated setting to take k from"}
    run = RunDir(Path(adapter).parent)
    if not run.metrics_file.is_file():
        return {"note": f"no metrics.json in the adapter's run folder ({run.path}): no effective respondents"}
    try:
        table = run.read_metrics().get("effective_respondents")
    except ValueError as err:
        log.warning("effective respondents not shown: %s", err)
        return {"note": str(err)}
    if not isinstance(table, dict) or not table:
        return {"note": f"{run.metrics_file} has no effective_respondents (a run from before simlab measured them)"}
    try:
        groups_of = groups()
    except FileNotFoundError as err:  # the data's countries.json: which group a country is in
        log.warning("effective respondents not shown: %s", err)
        return {"note": f"{err}: no country groups to find the closest evaluated setting by"}
    per_country = {}
    for country in countries:
        wanted, setting = closest_subsets(groups_of.get(country, ()), train_group[0], all_groups)
        found = {s: table[s] for s in wanted if isinstance(table.get(s), dict) and _is_k(table[s].get("k"))}
        record: dict = {"k": None, "bound": None, "setting": setting,
                        "subsets": {s: {"k": r["k"], "bound": r.get("bound")} for s, r in found.items()}}
        if found:
            bounds = {r.get("bound") for r in found.values()}
            median = float(np.median([r["k"] for r in found.values()]))  # "about k": halves round up
            record.update(k=int(math.floor(median + 0.5)),
                          bound=bounds.pop() if len(bounds) == 1 else None)
        if len(found) < len(wanted):
            record["missing"] = [s for s in wanted if s not in found]
        per_country[country] = record
    return {"from": str(run.metrics_file), "training_group": train_group[0], "training_group_from": train_group[1],
            "rule": RULE, "countries": per_country}


def _is_k(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 1


def add_bounds(frame, intervals) -> None:
    """Insert ``lower`` and ``upper`` after ``share``: each simulated cell's bounds at the intervals' level (the
    score sees the cell's whole row), empty (NaN) for an observed cell."""
    key = "population" if "population" in frame.columns else "country"
    lower, upper = np.full(len(frame), np.nan), np.full(len(frame), np.nan)
    for positions in frame.groupby(["question_id", key], sort=False).indices.values():
        if (frame["source"].iloc[positions] != "simulated").any():
            continue
        low, high = intervals.bounds([frame["share"].iloc[positions].tolist()])
        lower[positions], upper[positions] = low[0], high[0]
    at = frame.columns.get_loc("share") + 1
    frame.insert(at, "lower", lower)
    frame.insert(at + 1, "upper", upper)


@dataclass
class SimulationTrust:
    """What a :class:`~simlab.simulate.Simulator` adds to each simulation: the bounds (when its adapter saved
    intervals for this simulator), and the records of the intervals and of the effective respondents."""

    intervals: object | None
    intervals_record: dict
    adapter: str | None
    train_group: tuple[str, str]
    data_root: str | Path | None = None
    _groups: dict | None = field(default=None, repr=False)

    @classmethod
    def of(cls, loaded, temperature: float | None, data_root: str | Path | None = None) -> SimulationTrust:
        intervals, record = simulation_intervals(loaded, temperature)
        return cls(intervals, record, loaded.adapter, training_group(loaded.bundle), data_root)

    def apply(self, frame) -> None:
        """The bounds as columns (with intervals only), and ``attrs["intervals"]`` and
        ``attrs["effective_respondents"]`` (per country simulated: the k of its closest evaluated setting)."""
        from simlab.simulate.countries import WVS_GROUPS, country_groups

        if self.intervals is not None:
            add_bounds(frame, self.intervals)
        frame.attrs["intervals"] = dict(self.intervals_record)  # each frame its own record
        countries = list(dict.fromkeys(frame.loc[frame["source"] == "simulated", "country"]))

        def groups() -> dict:
            if self._groups is None:
                self._groups = country_groups(self.data_root)
            return self._groups

        frame.attrs["effective_respondents"] = respondents_record(self.adapter, countries, groups, self.train_group,
                                                                  WVS_GROUPS)


# ---------------------------------------------------------------------------------------------- the text
def share_cell(share: float, lower: float, upper: float) -> str:
    """A table cell with intervals: ``34% [28–41%]``; a cell without one (observed) ``34%``."""
    if lower is None or upper is None or math.isnan(lower) or math.isnan(upper):
        return f"{100 * share:.0f}%"
    return f"{100 * share:.0f}% [{100 * lower:.0f}–{100 * upper:.0f}%]"


def k_text(record: Mapping) -> str:
    """``about 120``, ``>= 100000``, ``<= 1``."""
    return {"at_least": ">= ", "at_most": "<= "}.get(record.get("bound"), "about ") + str(record["k"])


def trust_lines(frame) -> list[str]:
    """The markdown's paragraph on the intervals and the effective respondents (a simulation with intervals)."""
    attrs = frame.attrs
    fit = attrs["intervals"]
    text = (f"In brackets: {100 * fit['level']:g}% prediction intervals (split conformal, {fit['score']} score, "
            f"fitted on {fit.get('fitted_on')}'s {fit.get('questions')} questions; from `{fit['from']}`): for a new "
            f"question like those, about {100 * fit['level']:g}% of its true shares fall inside.")
    if fit.get("quantile") is None:
        text += " Too few calibration questions to certify the level: every interval is [0, 1]."
    if (frame["source"] == "observed").any():
        text += " Observed cells have none."
    lines = [text, ""]
    respondents = attrs.get("effective_respondents") or {}
    shown: dict[str, list[str]] = {}
    for country, record in (respondents.get("countries") or {}).items():
        if record.get("k") is None:
            continue
        where = ", ".join(record["subsets"]) if len(record["subsets"]) == 1 else (
            "median of " + ", ".join(record["subsets"]))
        shown.setdefault(f"{k_text(record)} respondents ({where}: {record['setting']})", []).append(country)
    if shown:
        lines += ["Effective respondents, from the closest setting the adapter's run evaluated: the simulator is "
                  "worth " + "; ".join(f"{text} for {', '.join(names)}" for text, names in shown.items()) + ".", ""]
    return lines
