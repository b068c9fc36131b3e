"""predictions.jsonl: one JSON line per tested row (subset, country, question, letters, human and predicted
shares), written and read here alone, in row order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from simlab.files import atomic_writer

if TYPE_CHECKING:
    from simlab.data.rows import SurveyRow


def write_predictions(
    path: Path, rows: dict[str, list[SurveyRow]], predictions: dict[str, list[list[float]]],
    **extra: dict[str, list[list[float]]],
) -> int:
    """One JSON line per tested row (written atomically); every row of every tested subset must have a prediction.
    ``extra``: more per-row values by field name (e.g. ``predicted_uncalibrated``), keyed like ``predictions``."""
    written = 0
    with atomic_writer(path) as handle:
        for subset, predicted in predictions.items():
            subset_rows = rows[subset]
            if len(predicted) != len(subset_rows):
                raise RuntimeError(f"subset {subset}: {len(predicted)} predictions for {len(subset_rows)} rows")
            for index, row in enumerate(subset_rows):
                record = {
                    "subset": subset,
                    "country": row.country,
                    "question_id": row.question_id,
                    "letters": list(row.letters),
                    **({"prompt_country": row.prompt_country} if row.prompt_country else {}),
                    **({"option_order": list(row.option_order)} if row.option_order else {}),
                    "human": list(row.target),
                    "predicted": predicted[index],
                    **{name: values[subset][index] for name, values in extra.items()},
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                written += 1
    return written


def iter_predictions(path: Path, subset: str | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each line of predictions.jsonl (blank lines skipped), only ``subset``'s if given."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (is {path.parent} a simlab run directory?)")
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if subset is None or record["subset"] == subset:
                yield line_number, record


def count_predictions(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def predictions_in_row_order(predictions: dict[str, dict[int, list[float]]]) -> dict[str, list[list[float]]]:
    return {s: [p[i] for i in range(len(p))] for s, p in predictions.items()}
