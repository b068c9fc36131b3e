"""predictions.jsonl: one JSON line per tested row (subset, country, population, question, letters, human and
predicted shares; under [ctrl] what the prompt named), written and read here alone, in row order. Readers get the
records (:func:`read_predictions`), one subset's records by row (:func:`records_by_row`, to compare runs) or the
predictions checked against the rows they belong to (:func:`predictions_for_rows`, to score them again)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from simlab.common.files import atomic_writer, write_text
from simlab.data.population_prompts import prompt_population
from simlab.data.populations import Population

if TYPE_CHECKING:
    from simlab.data.rows import SurveyRow

RowKey = tuple[str, str]  # (population key, question id): one row of a subset, as two runs of it share it


def prediction_records(
    rows: dict[str, list[SurveyRow]], predictions: dict[str, list[list[float]]],
    **extra: dict[str, list[list[float]]],
) -> Iterator[dict]:
    """The record of every tested row, subset by subset in row order: what one line of predictions.jsonl holds.
    Every row of every tested subset must have a prediction; ``extra``: more per-row values by field name (e.g.
    ``predicted_uncalibrated``), keyed like ``predictions``."""
    for subset, predicted in predictions.items():
        subset_rows = rows[subset]
        if len(predicted) != len(subset_rows):
            raise RuntimeError(f"subset {subset}: {len(predicted)} predictions for {len(subset_rows)} rows")
        for index, row in enumerate(subset_rows):
            yield {
                "subset": subset,
                "country": row.country,
                **({"population": row.population.as_dict()} if row.attributes else {}),
                "question_id": row.question_id,
                "letters": list(row.letters),
                **({"prompt_country": row.prompt_country} if row.prompt_country else {}),
                **({"prompt_population": shown.as_dict()} if (shown := prompt_population(row)) else {}),
                **({"option_order": list(row.option_order)} if row.option_order else {}),
                "human": list(row.target),
                "predicted": predicted[index],
                **{name: values[subset][index] for name, values in extra.items()},
            }


def write_predictions(
    path: Path, rows: dict[str, list[SurveyRow]], predictions: dict[str, list[list[float]]],
    **extra: dict[str, list[list[float]]],
) -> int:
    """One JSON line per tested row (:func:`prediction_records`), written atomically; returns the number written."""
    written = 0
    with atomic_writer(path) as handle:
        for record in prediction_records(rows, predictions, **extra):
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


def read_predictions(path: Path, subset: str | None = None) -> list[dict]:
    """predictions.jsonl's records in file order (only ``subset``'s when given)."""
    return [record for _, record in iter_predictions(path, subset)]


def records_by_row(path: Path, subset: str) -> dict[RowKey, dict]:
    """``subset``'s records keyed by (population key, question id): the rows two runs share are compared by this
    key (a whole country's key is its name). A row seen twice is an error naming its line."""
    records: dict[RowKey, dict] = {}
    for line_number, record in iter_predictions(path, subset):
        key = (record_population_key(record), str(record["question_id"]))
        if key in records:
            raise ValueError(f"{path}: line {line_number}: row {key} of subset {subset!r} appears twice")
        records[key] = record
    return records


def record_population_key(record: dict) -> str:
    """A record's population key: its ``population`` object when it has one (a subgroup), else its country."""
    population = record.get("population")
    if not population:
        return record["country"]
    return Population.from_mapping(population).key


def predictions_for_rows(path: Path, rows: dict[str, list[SurveyRow]]) -> dict[str, list[list[float]]]:
    """Each tested subset's predictions in row order, every line checked against its row of
    ``rows`` (subset, country, question, option letters, human shares): a mismatch is an error naming the line,
    never skipped, and every tested subset must have a line for each of its rows."""
    predictions: dict[str, list[list[float]]] = {}
    for line_number, record in iter_predictions(path):
        subset = record["subset"]
        if subset not in rows:
            raise ValueError(f"{path}: line {line_number}: subset {subset!r} is not in the run's data config")
        index = len(predictions.setdefault(subset, []))
        if index >= len(rows[subset]):
            raise ValueError(
                f"{path}: line {line_number}: more predictions than the {len(rows[subset])} rows of {subset}")
        row = rows[subset][index]
        for field, expected in (("country", row.country), ("question_id", row.question_id),
                                ("letters", list(row.letters))):
            if record[field] != expected:
                raise ValueError(f"{path}: line {line_number}: field {field!r} is {record[field]!r}, but row "
                                 f"{index} of {subset} has {expected!r}")
        if record_population_key(record) != row.population_key:
            raise ValueError(f"{path}: line {line_number}: population {record_population_key(record)!r}, but row "
                             f"{index} of {subset} is {row.population_key!r}")
        if max(abs(a - b) for a, b in zip(record["human"], row.target)) > 1e-9:
            raise ValueError(f"{path}: line {line_number}: field 'human' differs from row {index} of {subset}")
        predictions[subset].append(record["predicted"])
    for subset, predicted in predictions.items():
        if len(predicted) != len(rows[subset]):
            raise ValueError(f"{path}: {len(predicted)} predictions for the {len(rows[subset])} rows of {subset}")
    return predictions


def copy_predictions(source: Path, target: Path) -> Path:
    """``source``'s predictions.jsonl into ``target`` byte for byte (atomically): a re-analysis keeps the run's."""
    return write_text(target, source.read_text(encoding="utf-8"))


def count_predictions(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def predictions_in_row_order(predictions: dict[str, dict[int, list[float]]]) -> dict[str, list[list[float]]]:
    """A test pass's predictions by row index (gathered in any order) as lists in row order."""
    return {s: [p[i] for i in range(len(p))] for s, p in predictions.items()}
