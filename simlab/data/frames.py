"""Survey rows as a table for analysis: a pandas DataFrame, or a Hugging Face ``datasets.Dataset`` (the extra
``datasets``). Shares are the rows' normalised targets (they sum to 1 per country and question), as every metric
reads them."""

from __future__ import annotations

from collections.abc import Sequence

from simlab.common.extras import require
from simlab.data.rows import SurveyRow

FORMATS = ("long", "wide")
TARGETS = ("pandas", "datasets")
# one row per country x question x option: the tidy form (group by country/question, pivot on letter)
LONG_COLUMNS = ["survey", "subset", "country", "question_id", "question", "letter", "option", "share", "n"]
# one row per (country, question): options and shares as mappings letter -> label / share, in option order
WIDE_COLUMNS = ["survey", "subset", "country", "question_id", "question", "options", "shares", "n"]


def long_records(rows: Sequence[SurveyRow]) -> list[dict]:
    return [{"survey": r.survey, "subset": r.subset, "country": r.country, "question_id": r.question_id,
             "question": r.question, "letter": letter, "option": label, "share": share, "n": r.n}
            for r in rows for letter, label, share in zip(r.letters, r.labels, r.target)]


def wide_records(rows: Sequence[SurveyRow]) -> list[dict]:
    return [{"survey": r.survey, "subset": r.subset, "country": r.country, "question_id": r.question_id,
             "question": r.question, "options": dict(zip(r.letters, r.labels)),
             "shares": dict(zip(r.letters, r.target)), "n": r.n} for r in rows]


def rows_table(rows: Sequence[SurveyRow], format: str = "long", to: str = "pandas"):  # noqa: A002
    """``rows`` as a DataFrame (``to="pandas"``) or a ``datasets.Dataset`` (``to="datasets"``), ``long`` or
    ``wide`` (:data:`LONG_COLUMNS`, :data:`WIDE_COLUMNS`). In a Dataset a wide row's mappings are structs over
    every letter the table uses (a letter a question lacks is None)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if to not in TARGETS:
        raise ValueError(f"to must be one of {TARGETS}, got {to!r}")
    records, columns = (long_records(rows), LONG_COLUMNS) if format == "long" else (wide_records(rows), WIDE_COLUMNS)
    if to == "datasets":
        datasets = require("datasets", "datasets", "survey rows as a Hugging Face Dataset")
        return datasets.Dataset.from_dict({c: [r[c] for r in records] for c in columns})
    import pandas as pd

    frame = pd.DataFrame.from_records(records, columns=columns)
    frame["n"] = frame["n"].astype("Int64")  # the sample size is unknown (<NA>) for some surveys
    return frame
