"""Survey data: rows in the paper's format, prompts, option letters and the C x Q DataModule.

The names are loaded on first use: importing a light module of this package (rows, populations) must not import
PyTorch Lightning, which adds its own stderr log handler when it is imported before Hydra configures logging.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_NAMES = {
    "SurveyDataModule": "simlab.data.datamodule",
    "LetterResolutionError": "simlab.data.letters",
    "resolve_letter_ids": "simlab.data.letters",
    "PAPER_ANSWER_PREFIX": "simlab.data.prompts",
    "PromptFormat": "simlab.data.prompts",
    "PromptTooLongError": "simlab.data.prompts",
    "RowError": "simlab.data.rows",
    "SurveyRow": "simlab.data.rows",
    "read_rows": "simlab.data.rows",
}

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

if TYPE_CHECKING:
    from simlab.data.datamodule import SurveyDataModule
    from simlab.data.letters import LetterResolutionError, resolve_letter_ids
    from simlab.data.prompts import PAPER_ANSWER_PREFIX, PromptFormat, PromptTooLongError
    from simlab.data.rows import RowError, SurveyRow, read_rows


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'simlab.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name]), name)
