"""Position bias: does the model favour early option letters regardless of the question?

Per option position, the mean predicted share next to the mean human share, and how often the predicted
argmax (vs the human majority) is the first option. A model with a letter-A bias shows predicted > human at
position 0 and a much larger first-option argmax share than the humans'.
"""

from __future__ import annotations

from collections.abc import Sequence


def position_bias(human: Sequence[Sequence[float]], predicted: Sequence[Sequence[float]]) -> dict:
    if len(human) != len(predicted) or not human:
        raise ValueError(
            f"position bias needs matching, non-empty rows ({len(human)} human, {len(predicted)} predicted)")
    width = max(len(h) for h in human)
    sums_pred, sums_human, counts = [0.0] * width, [0.0] * width, [0] * width
    first_pred = first_human = 0
    for h, p in zip(human, predicted):
        for j, (hj, pj) in enumerate(zip(h, p)):
            sums_pred[j] += pj
            sums_human[j] += hj
            counts[j] += 1
        first_pred += max(range(len(p)), key=lambda j: (p[j], -j)) == 0
        first_human += max(range(len(h)), key=lambda j: (h[j], -j)) == 0
    return {
        "rows_per_position": counts,
        "predicted_mean_by_position": [s / c for s, c in zip(sums_pred, counts)],
        "human_mean_by_position": [s / c for s, c in zip(sums_human, counts)],
        "argmax_first_share": first_pred / len(human),
        "human_majority_first_share": first_human / len(human),
    }
