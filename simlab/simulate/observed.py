"""What anchors a simulation besides the model: surveyed cells the user observed (``simulate.observed``), each
(question, country) cell as a survey row, and the survey prior built from the training rows plus those cells."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simlab.data.prompts import PAPER_INSTRUCTION
from simlab.data.rows import SurveyRow
from simlab.simulate.countries import check_countries, wvs_countries
from simlab.simulate.outputs import unescaped
from simlab.simulate.questions import Question, SimulationInputError, read_text

OBSERVED_COLUMNS = ("question_id", "country", "letter", "share")
SIMULATED_SURVEY = "simulate"  # new questions: their ids are the user's, never a survey's question numbers


def cell_row(question: Question, country: str, target: Sequence[float] | None = None) -> SurveyRow:
    """A (question, country) cell as a survey row of the ``simulate`` survey (for prior lookups)."""
    return SurveyRow(
        subset="simulate", question_id=question.id, country=country,
        instruction=PAPER_INSTRUCTION.format(country=country), question=question.prompt_input,
        options=question.lettered_options, letters=question.letters,
        target=tuple(target) if target is not None else tuple([1.0 / len(question.letters)] * len(question.letters)),
        n=None, source=question.source, index=question.index, survey=SIMULATED_SURVEY,
    )


def read_observed(path: str | Path, questions: Sequence[Question], known: Sequence[str]) -> list[SurveyRow]:
    """Surveyed distributions for some (question, country) cells, from a CSV with columns question_id, country,
    letter, share (simulation.csv's layout; option labels may be there too): the prior for the other countries.
    Every cell must give each of its question's letters exactly once, with shares summing to 1 or 100."""
    from simlab.data.rows import SHARE_SCALES, SUM_TOLERANCE

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"observed distributions file {path} does not exist (simulate.observed)")
    by_id = {q.id: q for q in questions}
    cells: dict[tuple[str, str], dict[str, float]] = {}
    with io.StringIO(read_text(path), newline="") as handle:  # UTF-8, or an error naming the line and byte
        reader = csv.DictReader(handle)
        missing = [c for c in OBSERVED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SimulationInputError(str(path), None, None, None, f"missing column(s) {missing}")
        for line, record in enumerate(reader, start=2):
            def fail(column, message, line=line):
                where = f"{path}: line {line}" + (f": column '{column}'" if column else "")
                return SimulationInputError(where, None, None, None, message)

            if None in record:  # csv.DictReader puts cells beyond the header under the key None
                raise fail(None, f"{len(record[None])} cell(s) more than the header's {len(reader.fieldnames)}")
            record = {key: unescaped(value) if isinstance(value, str) else value for key, value in record.items()}
            for column in OBSERVED_COLUMNS:  # a short row leaves None, an empty cell ""
                if not (record[column] or "").strip():
                    raise fail(column, "is empty or missing: every observed row gives question_id, country, letter "
                                       "and share")
            question = by_id.get(record["question_id"])
            if question is None:
                raise fail("question_id", f"{record['question_id']!r} is not one of the questions being simulated "
                                          f"({sorted(by_id)})")
            check_countries([record["country"]], known, f"{path}: line {line}: column 'country'")
            if record["letter"] not in question.letters:
                raise fail(
                    "letter", f"{record['letter']!r} is not one of the question's letters {list(question.letters)}")
            try:
                share = float(record["share"])
            except ValueError:
                raise fail("share", f"not a number: {record['share']!r}") from None
            if not np.isfinite(share) or share < 0:
                raise fail("share", f"must be a finite share >= 0, got {share}")
            cell = cells.setdefault((question.id, record["country"]), {})
            if record["letter"] in cell:
                raise fail("letter", f"{record['letter']} given twice for {record['country']}")
            cell[record["letter"]] = share
    if not cells:
        raise SimulationInputError(str(path), None, None, None, "no surveyed cells (only a header): give some rows, "
                                   "or leave simulate.observed null")
    rows = []
    for (question_id, country), shares in cells.items():
        question = by_id[question_id]
        where = f"{path}: question {question_id}, {country}"
        if set(shares) != set(question.letters):
            raise SimulationInputError(str(path), None, question_id, "letter",
                                       f"{country}: letters {sorted(shares)}, expected all of {list(question.letters)}")
        total = sum(shares.values())
        if not any(abs(total - scale) <= SUM_TOLERANCE * scale for scale in SHARE_SCALES):
            raise SimulationInputError(str(path), None, question_id, "share",
                                       f"{where}: shares sum to {total:g}, neither 100 nor 1")
        rows.append(cell_row(question, country, [shares[l] / total for l in question.letters]))
    return rows


def simulation_prior_rows(cfg: Mapping[str, Any], observed: Sequence[SurveyRow]) -> list[SurveyRow]:
    """The rows a simulation's prior is built from: the run's prior rows (data.prior_subset, the training rows)
    plus the observed cells."""
    from simlab.data import SurveyDataModule

    datamodule = SurveyDataModule(tokenizer=None, **{k: v for k, v in cfg["data"].items() if k != "_target_"})
    datamodule.load_rows()
    return [*datamodule.prior_rows, *observed]


def simulation_countries(cfg: Mapping[str, Any], observed: Sequence[SurveyRow]) -> list[str]:
    """The countries a simulation's prior may be asked about (embedded for a similarity prior)."""
    return sorted({r.country for r in observed} | set(wvs_countries((cfg.get("data") or {}).get("root"))))
