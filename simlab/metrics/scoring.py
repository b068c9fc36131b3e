"""Score predicted distributions for rows that did not come from the LightningModule (baselines,
re-scored prediction files) with the same torchmetrics metrics as the model's test pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from simlab.data.rows import SurveyRow
from simlab.metrics.registry import survey_metrics


def pad_distributions(distributions: Sequence[Sequence[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ragged distributions into a zero-padded [B, K] float64 tensor and its bool mask."""
    width = max(len(d) for d in distributions)
    values = torch.zeros((len(distributions), width), dtype=torch.float64)
    mask = torch.zeros((len(distributions), width), dtype=torch.bool)
    for i, d in enumerate(distributions):
        values[i, : len(d)] = torch.tensor(list(d), dtype=torch.float64)
        mask[i, : len(d)] = True
    return values, mask


def score_subset(rows: Sequence[SurveyRow], predicted: Sequence[Sequence[float]]) -> dict[str, float]:
    """Mean metrics of one subset; every row needs a prediction with one share per option."""
    if len(rows) != len(predicted):
        raise ValueError(f"{len(predicted)} predictions for {len(rows)} rows")
    for row, p in zip(rows, predicted):
        if len(p) != len(row.letters):
            raise ValueError(f"{row.source}: row {row.index}: {len(p)} predicted shares for {len(row.letters)} options")
    target, mask = pad_distributions([row.target for row in rows])
    preds, _ = pad_distributions(predicted)
    metrics = survey_metrics()
    metrics.update(preds, target, mask)
    values = {name: float(v) for name, v in metrics.compute().items()}
    values["n"] = len(rows)
    return values


def score_subsets(
    rows: dict[str, Sequence[SurveyRow]], predicted: dict[str, Sequence[Sequence[float]]]
) -> dict[str, dict[str, float]]:
    return {subset: score_subset(rows[subset], predicted[subset]) for subset in predicted}
