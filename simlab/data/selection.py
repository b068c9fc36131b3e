"""Which rows a run uses: the data files found under the data root, one (country, question) cell per subset, and
the seeded sample a row limit keeps."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simlab.data.files import data_file_candidates, find_data_file
from simlab.data.rows import RowError, SurveyRow

log = logging.getLogger(__name__)


def data_file(name: str, root: Path) -> Path:
    """A data file: ``name`` itself when absolute, else under ``root``; plain, else with .xz or .gz added."""
    return find_data_file(name, root)


def check_files_exist(files: Sequence[str], root: Path) -> None:
    """Every configured file is there (plain or compressed), or one error listing all that are not."""
    missing = [name for name in files if not any(path.is_file() for path in data_file_candidates(name, root))]
    if missing:
        raise FileNotFoundError(f"data files not found under {root}: {missing}, neither as named nor with .xz or .gz "
                                f"added (data.files, data.root)")


def check_unique_cells(subset: str, rows: Sequence[SurveyRow]) -> None:
    """A (population, question) cell appears once per subset: a repeat would be scored twice (or contradict
    itself). A population is a country, or a subgroup of one."""
    seen: dict[tuple[str, str], SurveyRow] = {}
    for row in rows:
        key = (row.population_key, row.question_id)
        first = seen.setdefault(key, row)
        if first is not row:
            same = "the same" if first.target == row.target else "a different"
            what = "country" if not row.attributes else "population"
            raise RowError(
                row.source, row.index, "id",
                f"subset {subset}: {what} {row.population_key!r}, question {row.question_id} repeats {first.source}: "
                f"row {first.index} (with {same} distribution); each ({what}, question) must appear once",
            )


def row_limit(train: bool, limit_per_subset: int | None, limit_eval_per_subset: int | None) -> int | None:
    """How many rows a subset keeps: ``limit_per_subset``, and for the valid and test subsets (not ``train``) at
    most ``limit_eval_per_subset``; None keeps every row."""
    limit = limit_per_subset
    if not train and limit_eval_per_subset is not None:
        limit = limit_eval_per_subset if limit is None else min(limit, limit_eval_per_subset)
    return limit


SAMPLE_UNITS = ("row", "cell")


def sample_rows(rows: list[SurveyRow], limit: int | None, seed: int, subset: str, unit: str = "row") -> list[SurveyRow]:
    """A seeded random sample of ``limit`` rows (seeded by the run's seed and the subset), in file order.

    ``unit="cell"`` samples whole (country, question) cells instead: every subgroup of a drawn country's question
    is kept together (so subgroups can be compared with each other), cells drawn in a seeded order until at least
    ``limit`` rows are kept (the last cell is kept whole). For whole-country rows a cell is one row."""
    if unit not in SAMPLE_UNITS:
        raise ValueError(f"data.sample_unit must be one of {list(SAMPLE_UNITS)}, got {unit!r}")
    if limit is None or len(rows) <= limit:
        return rows
    if unit == "row":
        keep = sorted(random.Random(f"{seed}:{subset}").sample(range(len(rows)), limit))
        return [rows[i] for i in keep]
    cells: dict[tuple[str, str], list[int]] = {}
    for position, row in enumerate(rows):
        cells.setdefault((row.country, row.question_id), []).append(position)
    order = list(cells)
    random.Random(f"{seed}:{subset}:cell").shuffle(order)
    chosen: list[int] = []
    for key in order:
        if len(chosen) >= limit:
            break
        chosen += cells[key]
    return [rows[i] for i in sorted(chosen)]


def report_invalid_rows(invalid_rows: list[dict[str, Any]], invalid_rows_file: str | None) -> None:
    """Log the rows ``drop_invalid`` skipped and write them, one JSON object a line, to ``invalid_rows_file``."""
    if not invalid_rows:
        return
    ids = [r["id"] for r in invalid_rows]
    log.warning("dropped %d invalid rows (drop_invalid=true); ids: %s", len(ids), ids)
    if invalid_rows_file:
        Path(invalid_rows_file).parent.mkdir(parents=True, exist_ok=True)
        with open(invalid_rows_file, "w", encoding="utf-8") as handle:
            for record in invalid_rows:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        log.warning("invalid rows written to %s", invalid_rows_file)
