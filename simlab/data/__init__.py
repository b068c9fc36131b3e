"""Survey data: rows in the paper's format, prompts, option letters and the C x Q DataModule."""

from simlab.data.datamodule import SurveyDataModule
from simlab.data.letters import LetterResolutionError, resolve_letter_ids
from simlab.data.prompts import PAPER_ANSWER_PREFIX, PromptFormat, PromptTooLongError
from simlab.data.rows import RowError, SurveyRow, read_rows

__all__ = [
    "PAPER_ANSWER_PREFIX",
    "LetterResolutionError",
    "PromptFormat",
    "PromptTooLongError",
    "RowError",
    "SurveyDataModule",
    "SurveyRow",
    "read_rows",
    "resolve_letter_ids",
]
