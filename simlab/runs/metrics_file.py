"""metrics.json: its typed schema (:class:`RunMetrics`) and the summary a test pass writes into it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from simlab.metrics.registry import metric_names


class _Unset:
    """A metrics.json key that is absent (None is a value that is written: ``"adapter": null``)."""

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Any = _Unset()

# Baselines whose predictions are a language model's own answers (JSON-ZS asks it for the distribution): the
# report draws them beside the models' where a figure is about what models answer.
MODEL_ANSWER_BASELINES = frozenset({"json_zs"})


def _key(recomputed: bool = False) -> Any:
    """A metrics.json key; ``recomputed``: simlab.analysis.reanalyse computes it again from the predictions."""
    return field(default=UNSET, metadata={"recomputed": recomputed})


@dataclass
class RunMetrics:
    """The schema of metrics.json: every key a run (or a re-analysis) writes, in the order it writes them.

    Absent keys are :data:`UNSET` and not written; ``None`` is written as ``null``. A task writes only its own
    keys (a baseline has no ``adapter``, a model run no ``baseline``). Keys this schema does not know (written by
    a newer analysis) are kept in ``extra``. :meth:`from_dict` keeps the order of the keys it read, so
    ``RunMetrics.from_dict(d).to_dict() == d`` with the same key order: reading and writing moves nothing."""

    # what ran
    task: str = _key()
    baseline: str = _key()  # a baseline's name and its fitted state
    baseline_report: dict = _key()
    resumed_from: dict = _key()  # the checkpoint an interrupted fine-tune resumed from
    best_valid: dict = _key()  # a fine-tune's best validation score (metric, value, checkpoint): a search's objective
    model: str = _key()
    model_source: str = _key()
    adapter: str | None = _key()
    adapter_mismatch: list = _key()  # settings asked against the adapter's own, allowed by model.allow_mismatch
    loss: str | None = _key()
    prior: dict | None = _key()
    calibration: dict = _key()  # the temperature of the calibrated simulator, and the scores before it
    uncalibrated: dict = _key()
    intervals: dict = _key()  # the conformal prediction intervals scored (simlab.simulator.intervals), when any
    prompt_style: str = _key()
    settings: dict = _key()
    data_warnings: list = _key()  # what the data checks let pass but logged (simlab.data.checks)
    seed: int = _key()
    overrides: list = _key()
    code: dict | None = _key()  # simlab.runs.provenance.git_state at the start of the run
    rows: dict = _key(recomputed=True)  # rows per subset
    wall_time_s: float = _key()
    # the scores: per subset ({metric: value, "n": rows}) and the paper's average
    subsets: dict = _key(recomputed=True)
    paper_average: dict | None = _key(recomputed=True)
    paper_average_subsets: list = _key(recomputed=True)
    paper_average_missing: list = _key(recomputed=True)
    # the analysis after the test pass (simlab.analysis.post_test.analyse)
    position_bias: dict = _key(recomputed=True)
    noise_ceiling: dict = _key(recomputed=True)
    effective_respondents: dict = _key(recomputed=True)  # per subset: the k respondents the simulator is worth
    calibrated: dict = _key(recomputed=True)
    # a re-analysis (simlab.analysis.reanalyse)
    reanalysed_from: str = _key()
    reanalysis_code: dict | None = _key()
    limit_eval_per_subset: int = _key()
    # keys this schema does not name, and the order of every key as read
    extra: dict = field(default_factory=dict, metadata={"recomputed": False})
    _order: tuple = field(default=(), repr=False, compare=False, metadata={"recomputed": False})

    @property
    def is_baseline(self) -> bool:
        """A baseline's run: it records which baseline (``baseline``), a language model's run never does."""
        return self.baseline is not UNSET

    @property
    def answers_from_model(self) -> bool:
        """The predictions are a language model's answers: a model's run, or a baseline that asks one
        (:data:`MODEL_ANSWER_BASELINES`)."""
        return not self.is_baseline or self.baseline in MODEL_ANSWER_BASELINES

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The metrics.json keys the schema names, in the order a run writes them."""
        return tuple(f.name for f in fields(cls) if f.name not in ("extra", "_order"))

    @classmethod
    def recomputed_keys(cls) -> tuple[str, ...]:
        """The keys simlab.analysis.reanalyse computes again from a run's predictions (the others are kept)."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("recomputed"))

    @classmethod
    def from_dict(cls, metrics: dict) -> RunMetrics:
        if not isinstance(metrics, dict):
            raise ValueError(f"metrics must be a JSON object, got {type(metrics).__name__}")
        known = set(cls.keys())
        subsets = metrics.get("subsets", {})
        if not isinstance(subsets, dict) or not all(isinstance(v, dict) for v in subsets.values()):
            raise ValueError("metrics: 'subsets' must map each subset to its {metric: value}")
        return cls(**{k: v for k, v in metrics.items() if k in known},
                   extra={k: v for k, v in metrics.items() if k not in known}, _order=tuple(metrics))

    def to_dict(self) -> dict:
        """The metrics.json object: the keys read (in their order), then the others set, in the schema's order."""
        values = {k: getattr(self, k) for k in self.keys() if getattr(self, k) is not UNSET}
        values.update(self.extra)
        ordered = {k: values.pop(k) for k in self._order if k in values}
        return {**ordered, **values}


def summarize(
    test_results: dict[str, dict[str, float]],
    average_subsets: Sequence[str],
    **info,
) -> dict:
    """``{**info, "subsets": {...}, "paper_average": {...}}``; the average is over ``average_subsets``
    (all of which must have been tested, or it is left out and says why), of the metrics registered with
    ``in_average`` (:mod:`simlab.metrics.registry`)."""
    summary = dict(info)
    summary["subsets"] = {name: dict(values) for name, values in test_results.items()}
    missing = [s for s in average_subsets if s not in test_results]
    if average_subsets and not missing:
        summary["paper_average"] = {
            m: sum(test_results[s][m] for s in average_subsets) / len(average_subsets)
            for m in metric_names(in_average=True)
        }
        summary["paper_average_subsets"] = list(average_subsets)
    elif average_subsets:
        summary["paper_average"] = None
        summary["paper_average_missing"] = missing
    return summary
