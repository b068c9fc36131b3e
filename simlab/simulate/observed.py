"""What anchors a simulation besides the model: surveyed cells the user observed (``simulate.observed``), each
(question, country) cell as a survey row, and the survey prior built from the training rows plus those cells."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simlab.common.spreadsheet import unescaped
from simlab.data.populations import ATTRIBUTE_ORDER, Population, PopulationWording, ordered_attributes
from simlab.data.prompts import PAPER_INSTRUCTION
from simlab.data.rows import SurveyRow
from simlab.simulate.countries import check_countries, wvs_countries
from simlab.simulate.questions import Question, SimulationInputError, read_text

OBSERVED_COLUMNS = ("question_id", "country", "letter", "share")
SIMULATED_SURVEY = "simulate"  # new questions: their ids are the user's, never a survey's question numbers


def cell_row(question: Question, country: str | Population, target: Sequence[float] | None = None,
             country_target: Sequence[float] | None = None) -> SurveyRow:
    """A (question, country or subgroup) cell as a survey row of the ``simulate`` survey (for prior lookups);
    ``country_target``: the whole country's observed shares, a subgroup's breakdown input."""
    population = country if isinstance(country, Population) else Population(country)
    instruction = (PopulationWording().instruction(population) if population.attributes
                   else PAPER_INSTRUCTION.format(country=population.country))
    return SurveyRow(
        subset="simulate", question_id=question.id, country=population.country,
        instruction=instruction, question=question.prompt_input,
        options=question.lettered_options, letters=question.letters,
        target=tuple(target) if target is not None else tuple([1.0 / len(question.letters)] * len(question.letters)),
        n=None, source=question.source, index=question.index, survey=SIMULATED_SURVEY,
        attributes=population.attributes, country_target=tuple(country_target) if country_target is not None else None,
    )


def read_observed(path: str | Path, questions: Sequence[Question], known: Sequence[str]) -> list[SurveyRow]:
    """Surveyed distributions for some (question, country) cells, from a CSV with columns question_id, country,
    letter, share (simulation.csv's layout; option labels may be there too): the prior for the other countries.
    Every cell must give each of its question's letters exactly once, with shares summing to 1 or 100. Attribute
    columns (sex, age...; empty: not split by it) make a row a subgroup's; without them it is the whole country's."""
    from simlab.data.rows import SHARE_SCALES, SUM_TOLERANCE

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"observed distributions file {path} does not exist (simulate.observed)")
    by_id = {q.id: q for q in questions}
    cells: dict[tuple[str, Population], dict[str, float]] = {}
    with io.StringIO(read_text(path), newline="") as handle:  # UTF-8, or an error naming the line and byte
        reader = csv.DictReader(handle)
        missing = [c for c in OBSERVED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SimulationInputError(str(path), None, None, None, f"missing column(s) {missing}")
        attribute_columns = [c for c in ATTRIBUTE_ORDER if c in (reader.fieldnames or [])]
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
            given = {c: (record[c] or "").strip() for c in attribute_columns}
            try:
                attributes = ordered_attributes({c: v for c, v in given.items() if v})
            except ValueError as err:
                raise fail(None, str(err)) from None
            population = Population(record["country"], attributes)
            cell = cells.setdefault((question.id, population), {})
            if record["letter"] in cell:
                raise fail("letter", f"{record['letter']} given twice for {population.key}")
            cell[record["letter"]] = share
    if not cells:
        raise SimulationInputError(str(path), None, None, None, "no surveyed cells (only a header): give some rows, "
                                   "or leave simulate.observed null")
    rows = []
    for (question_id, population), shares in cells.items():
        question, country = by_id[question_id], population.key
        where = f"{path}: question {question_id}, {country}"
        if set(shares) != set(question.letters):
            raise SimulationInputError(str(path), None, question_id, "letter",
                                       f"{country}: letters {sorted(shares)}, expected all of {list(question.letters)}")
        total = sum(shares.values())
        if not any(abs(total - scale) <= SUM_TOLERANCE * scale for scale in SHARE_SCALES):
            raise SimulationInputError(str(path), None, question_id, "share",
                                       f"{where}: shares sum to {total:g}, neither 100 nor 1")
        rows.append(cell_row(question, population, [shares[l] / total for l in question.letters]))
    return rows


def simulation_prior_rows(cfg: Mapping[str, Any], observed: Sequence[SurveyRow]) -> list[SurveyRow]:
    """The rows a simulation's prior is built from: the run's prior rows (data.prior_subset, the training rows)
    plus the observed whole-country cells (an observed subgroup is shown as surveyed, never a prior; a breakdown
    prior learns subgroup shifts from the training rows alone: the overall results are its inputs)."""
    from simlab.data import SurveyDataModule

    datamodule = SurveyDataModule(tokenizer=None, **{k: v for k, v in cfg["data"].items() if k != "_target_"})
    datamodule.load_rows()
    breakdown = (cfg.get("prior") or {}).get("use") == "breakdown"
    return [*datamodule.prior_rows, *([] if breakdown else whole_countries(observed))]


def whole_countries(observed: Sequence[SurveyRow]) -> list[SurveyRow]:
    """The observed cells of whole countries (no attributes): the ones a country-level prior can take."""
    return [row for row in observed if not row.attributes]


def simulation_countries(cfg: Mapping[str, Any], observed: Sequence[SurveyRow]) -> list[str]:
    """The countries a simulation's prior may be asked about (embedded for a similarity prior)."""
    return sorted({r.country for r in observed} | set(wvs_countries((cfg.get("data") or {}).get("root"))))
