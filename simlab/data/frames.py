"""Survey rows as a table for analysis: a pandas DataFrame, or a Hugging Face ``datasets.Dataset`` (the extra
``datasets``). Shares are the rows' normalised targets (they sum to 1 per population and question), as every metric
reads them. Subgroup rows add a column per attribute (``sex``, ``age``...; None for a whole country) after
``country``, and ``n_eff`` after ``n``; a table of whole countries has exactly the columns it always had."""

from __future__ import annotations

from collections.abc import Sequence

from simlab.common.extras import require
from simlab.data.populations import ATTRIBUTE_ORDER
from simlab.data.rows import SurveyRow

FORMATS = ("long", "wide")
TARGETS = ("pandas", "datasets")
# one row per country x question x option: the tidy form (group by country/question, pivot on letter)
LONG_COLUMNS = ["survey", "subset", "country", "question_id", "question", "letter", "option", "share", "n"]
# one row per (country, question): options and shares as mappings letter -> label / share, in option order
WIDE_COLUMNS = ["survey", "subset", "country", "question_id", "question", "options", "shares", "n"]


def attribute_names(rows: Sequence[SurveyRow]) -> list[str]:
    """The attributes the rows' subgroups carry, in :data:`ATTRIBUTE_ORDER`; [] for whole countries only."""
    present = {name for r in rows for name, _ in r.attributes}
    return [name for name in ATTRIBUTE_ORDER if name in present]


def columns_for(rows: Sequence[SurveyRow], format: str = "long") -> list[str]:  # noqa: A002
    """The table's columns: :data:`LONG_COLUMNS` / :data:`WIDE_COLUMNS`, with each attribute after ``country`` and
    ``n_eff`` after ``n`` when some row is a subgroup."""
    columns = list(LONG_COLUMNS if format == "long" else WIDE_COLUMNS)
    names = attribute_names(rows)
    if names:
        at = columns.index("country") + 1
        columns[at:at] = names
        columns.append("n_eff")
    return columns


def _population(r: SurveyRow, names: list[str]) -> dict:
    """A row's attribute columns and n_eff (nothing for a table of whole countries)."""
    if not names:
        return {}
    attributes = dict(r.attributes)
    return {**{name: attributes.get(name) for name in names}, "n_eff": r.n_eff}


def long_records(rows: Sequence[SurveyRow]) -> list[dict]:
    names = attribute_names(rows)
    return [{"survey": r.survey, "subset": r.subset, "country": r.country, "question_id": r.question_id,
             "question": r.question, "letter": letter, "option": label, "share": share, "n": r.n,
             **_population(r, names)}
            for r in rows for letter, label, share in zip(r.letters, r.labels, r.target)]


def wide_records(rows: Sequence[SurveyRow]) -> list[dict]:
    names = attribute_names(rows)
    return [{"survey": r.survey, "subset": r.subset, "country": r.country, "question_id": r.question_id,
             "question": r.question, "options": dict(zip(r.letters, r.labels)),
             "shares": dict(zip(r.letters, r.target)), "n": r.n, **_population(r, names)} for r in rows]


def rows_table(rows: Sequence[SurveyRow], format: str = "long", to: str = "pandas"):  # noqa: A002
    """``rows`` as a DataFrame (``to="pandas"``) or a ``datasets.Dataset`` (``to="datasets"``), ``long`` or
    ``wide`` (:data:`LONG_COLUMNS`, :data:`WIDE_COLUMNS`, plus the attributes and ``n_eff`` of subgroup rows:
    :func:`columns_for`). In a Dataset a wide row's mappings are structs over every letter the table uses (a letter
    a question lacks is None)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if to not in TARGETS:
        raise ValueError(f"to must be one of {TARGETS}, got {to!r}")
    records = long_records(rows) if format == "long" else wide_records(rows)
    columns = columns_for(rows, format)
    if to == "datasets":
        datasets = require("datasets", "datasets", "survey rows as a Hugging Face Dataset")
        return datasets.Dataset.from_dict({c: [r[c] for r in records] for c in columns})
    import pandas as pd

    frame = pd.DataFrame.from_records(records, columns=columns)
    frame["n"] = frame["n"].astype("Int64")  # the sample size is unknown (<NA>) for some surveys
    return frame
