"""What a prior is looked up by: a question (its survey, id and option letters, so a Pew question 83 never
receives WVS question 83's answers) asked of one subgroup (``()``: whole countries)."""

from __future__ import annotations

from simlab.data.populations import Attributes
from simlab.data.rows import SurveyRow

QuestionKey = tuple[str, str, tuple[str, ...]]  # (survey, question id, option letters in the survey's order)
PriorKey = tuple[QuestionKey, Attributes]  # a question asked of one subgroup (() = whole countries)


def question_key(row: SurveyRow) -> QuestionKey:
    if row.option_order is not None:
        raise ValueError(f"{row.source}: row {row.index}: priors are looked up before options are shuffled")
    return (row.survey, row.question_id, row.letters)


def prior_key(row: SurveyRow) -> PriorKey:
    """The row's question and subgroup: a subgroup's prior is the same subgroup's answers in other countries."""
    return (question_key(row), row.attributes)
