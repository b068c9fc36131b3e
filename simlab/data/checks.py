"""Checks across the rows of a data config, after each row was parsed on its own (:mod:`simlab.data.rows`): every
country is a known one (a misspelt "Andora" would be a population of its own), and a question is worded the same
wherever it appears (the prior and the per-question analyses pool its rows by (survey, id)).

A problem is a :class:`~simlab.data.rows.RowError` naming the file, row and field, raised before any model is
loaded; what is only worth knowing (a question whose text is empty besides the options intro, names left unchecked)
is a warning the datamodule logs and a run records in metrics.json (``data_warnings``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path

from simlab.data.files import data_file_candidates, read_data_json
from simlab.data.rows import RowError, SurveyRow

COUNTRIES_FILE = "wvs7/countries.json"  # the default list of known countries, under the data root
UNKNOWN_COUNTRIES = ("error", "warn")
# how every question text of the paper's data ends; a text that is nothing else asks nothing (WVS Q144)
OPTIONS_INTRO = re.compile(r"here are the options\s*:?\s*$", re.IGNORECASE)


def known_countries(root: Path, countries: str | None) -> tuple[set[str] | None, str]:
    """(the known country names, where they come from): every key of a countries.json and each entry's
    ``pew_names`` (the names the Pew files use, e.g. "Czech Rep." for Czechia). ``countries`` is that file
    (relative to ``root`` or absolute, plain or compressed): given, it must exist; None takes
    ``wvs7/countries.json`` under ``root`` when there, else no list (names then go unchecked: returns None)."""
    name = countries or COUNTRIES_FILE
    if not any(path.is_file() for path in data_file_candidates(name, root)):
        if countries is None:
            return None, f"{root} has no {COUNTRIES_FILE}"
        raise FileNotFoundError(f"data.countries={countries}: no such file under {root} (a countries.json: "
                                f"name -> {{pew_names: [...]}}), nor with .xz or .gz added")
    table = read_data_json(name, root)
    source = str(Path(name) if Path(name).is_absolute() else Path(root) / name)
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ValueError(f"{source}: expected a JSON object mapping each country name to its entry (data.countries)")
    names = set(table)
    for entry in table.values():
        names.update(str(n) for n in entry.get("pew_names") or ())
    return names, source


def check_countries(rows: Sequence[SurveyRow], known: set[str], source: str,
                    policy: str = "error") -> tuple[list[RowError], list[str]]:
    """(one error per row naming an unknown country, the warnings). ``policy`` ``error``: the errors are the
    caller's to raise (or drop, with data.drop_invalid); ``warn``: no errors, one warning per unknown name."""
    if policy not in UNKNOWN_COUNTRIES:
        raise ValueError(f"data.unknown_countries must be one of {list(UNKNOWN_COUNTRIES)}, got {policy!r}")
    errors: list[RowError] = []
    warnings: list[str] = []
    unknown: dict[str, list[SurveyRow]] = {}
    for row in rows:
        if row.country not in known:
            unknown.setdefault(row.country, []).append(row)
    for name, named in unknown.items():
        hint = suggestion(name, known)
        if policy == "error":
            errors += [RowError(row.source, row.index, "instruction", f"unknown country {name!r} (not in {source})"
                                f"{hint}; fix the name, or set data.unknown_countries=warn") for row in named]
        else:
            warnings.append(f"{len(named)} row(s) name the unknown country {name!r} (first: {place(named[0])}: row "
                            f"{named[0].index}), not in {source}{hint}; kept (data.unknown_countries=warn)")
    return errors, warnings


def place(row: SurveyRow) -> str:
    """The row's file as the config names it (``wvs7/sft_wvs_train.json``: a warning in metrics.json reads the same
    wherever the data lies), else its path."""
    return row.file or row.source


def suggestion(name: str, known: set[str]) -> str:
    """"; did you mean 'Andorra'?" for the closest known names, or nothing when none is close."""
    close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
    close += [k for k in sorted(known) if k.lower() == name.lower() and k not in close]
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def check_question_texts(rows: Sequence[SurveyRow]) -> list[str]:
    """A question (survey, id) must have one text and one option list in every row that asks it: a second wording
    is an error naming both rows. Returns the warnings: questions whose text is empty besides the options intro
    (one per question)."""
    first: dict[tuple[str, str], SurveyRow] = {}
    bare: dict[tuple[str, str], list[SurveyRow]] = {}
    for row in rows:
        key = (row.survey, row.question_id)
        seen = first.setdefault(key, row)
        if seen is not row:
            for name, mine, theirs in (("input", row.question, seen.question), ("options", row.options, seen.options)):
                if mine != theirs:
                    raise RowError(
                        row.source, row.index, name,
                        f"question {row.question_id} (survey {row.survey}) is worded differently from "
                        f"{seen.source}: row {seen.index}: {difference(theirs, mine)}; one question has one wording "
                        f"(give the other wording its own id)")
        if not OPTIONS_INTRO.sub("", row.question).strip():
            bare.setdefault(key, []).append(row)
    return [f"question {qid} (survey {survey}) has no text besides the options intro in {len(named)} row(s) (first: "
            f"{place(named[0])}: row {named[0].index}): the model sees only its options"
            for (survey, qid), named in bare.items()]


def difference(first, second) -> str:
    """Where two wordings part: ``'...abc' vs '...abd'`` around the first differing character (or option)."""
    if isinstance(first, tuple):
        if len(first) != len(second):
            return f"{len(first)} options vs {len(second)}"
        position = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)
        return f"option {position} {first[position]!r} vs {second[position]!r}"
    at = next((i for i, (a, b) in enumerate(zip(first, second)) if a != b), min(len(first), len(second)))
    start = max(0, at - 20)
    cut = "..." if start else ""
    return f"{cut}{first[start:at + 20]!r} vs {cut}{second[start:at + 20]!r} (from character {at})"


def check_rows(rows: list[SurveyRow], root: Path, countries: str | None = None, unknown_countries: str = "error",
               drop_invalid: bool = False) -> tuple[list[SurveyRow], list[dict], list[str]]:
    """Every check of this module on the rows of a data config: (the rows kept, the rows dropped as invalid records
    when ``drop_invalid``, the warnings). The first error raises unless ``drop_invalid`` (unknown countries only:
    a question worded two ways has no row to blame, so it always raises)."""
    known, source = known_countries(root, countries)
    warnings: list[str] = []
    invalid: list[dict] = []
    if known is None:
        warnings.append(f"country names not checked: {source} (data.countries names a list)")
    else:
        errors, warnings = check_countries(rows, known, source, unknown_countries)
        if errors and not drop_invalid:
            raise errors[0]
        by_place = {(row.source, row.index): row for row in rows}
        invalid = [{"file": e.path, "index": e.index, "id": by_place[(e.path, e.index)].question_id, "error": str(e)}
                   for e in errors]
        bad = {(e.path, e.index) for e in errors}
        rows = [row for row in rows if (row.source, row.index) not in bad]
    warnings += check_question_texts(rows)
    return rows, invalid, warnings
