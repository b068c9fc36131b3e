"""The questions a simulation asks: checked one by one (every problem names its file, entry and field), read from
YAML, JSON or CSV, and written as the paper writes survey questions (lettered options, the options intro)."""

from __future__ import annotations

import csv
import io
import json
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPTIONS_INTRO = " \nHere are the options: \n"  # how every WVS question text ends in the paper's data
LETTERS = string.ascii_uppercase
QUESTION_FIELDS = ("id", "text", "options")


class SimulationInputError(ValueError):
    """A question or country that cannot be simulated, located by source, entry (index and id) and field."""

    def __init__(self, source: str, index: int | None, question_id: str | None, field_name: str | None, message: str):
        self.source, self.index, self.question_id, self.field_name = source, index, question_id, field_name
        super().__init__(f"{input_location(source, index, question_id, field_name)}: {message}")


def input_location(source: str, index: int | None, question_id: str | None, field_name: str | None) -> str:
    """``source: entry 1 (id 'x'): field 'text'``, each part only where known."""
    where = source
    if index is not None:
        where += f": entry {index}"
        if question_id is not None:
            where += f" (id {question_id!r})"
    if field_name is not None:
        where += f": field '{field_name}'"
    return where


@dataclass(frozen=True)
class Question:
    """A question to simulate: its text and plain option labels (letters A, B, C... are assigned in order)."""

    id: str
    text: str
    options: tuple[str, ...]
    source: str = "<api>"
    index: int = 0

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(LETTERS[: len(self.options)])

    @property
    def lettered_options(self) -> tuple[str, ...]:
        """The options as the paper writes them: '(A)label'."""
        return tuple(f"({letter}){label}" for letter, label in zip(self.letters, self.options))

    @property
    def prompt_input(self) -> str:
        """The question in the data's style: the text, then ' \\nHere are the options: \\n'."""
        text = self.text.strip()
        if text.lower().rstrip(":").endswith("here are the options"):
            text = text.rstrip(":").rstrip()[: -len("here are the options")].rstrip()
        return text + OPTIONS_INTRO


def make_question(text: Any, options: Any, id: Any = None, *, source: str = "<api>", index: int = 0) -> Question:
    """Validate one question (raises SimulationInputError naming the entry and field)."""
    qid = _question_id(id, source, index)

    def fail(field_name: str, message: str) -> SimulationInputError:
        return SimulationInputError(source, index, qid, field_name, message)

    _check_text(text, fail)
    labels = _option_labels(options, fail)
    return Question(id=qid if qid is not None else f"q{index + 1}", text=text.strip(), options=tuple(labels),
                    source=source, index=index)


def _question_id(qid: Any, source: str, index: int) -> str | None:
    """The entry's id as a stripped string, or None when it gives none."""
    if qid is None:
        return None
    if isinstance(qid, bool) or not isinstance(qid, (str, int)) or not str(qid).strip():
        raise SimulationInputError(source, index, None, "id", f"must be a non-empty string or an integer, got {qid!r}")
    return str(qid).strip()


def _check_text(text: Any, fail: Callable[[str, str], SimulationInputError]) -> None:
    if text is None:
        raise fail("text", "missing: every question needs its text")
    if not isinstance(text, str):
        raise fail("text", f"must be a string, got {type(text).__name__}")
    if not text.strip():
        raise fail("text", "is empty")


def _option_labels(options: Any, fail: Callable[[str, str], SimulationInputError]) -> list[str]:
    """The plain option labels, stripped: 2 to 26 of them, each a non-empty string without a '(L)' prefix, none
    repeated."""
    if options is None:
        raise fail("options", "missing: give the answer options as a list of plain labels")
    if isinstance(options, str) or not isinstance(options, Sequence):
        raise fail("options", f"must be a list of plain labels, got {type(options).__name__}")
    if len(options) == 0:
        raise fail("options", "has no options; a question needs at least 2")
    if len(options) == 1:
        raise fail("options", f"has only one option ({options[0]!r}); a question needs at least 2")
    if len(options) > len(LETTERS):
        raise fail("options", f"has {len(options)} options; at most {len(LETTERS)} (letters A-Z) can be scored")
    labels: list[str] = []
    for position, label in enumerate(options):
        if not isinstance(label, str):
            raise fail("options", f"option {position} must be a string, got {label!r}")
        label = label.strip()
        if not label:
            raise fail("options", f"option {position} is empty")
        if label[:1] == "(" and label[2:3] == ")" and label[1:2] in LETTERS:
            raise fail(
                "options", f"option {position} {label!r} has a '(L)' prefix: give plain labels, letters are assigned")
        if label in labels:
            raise fail("options", f"option {label!r} is repeated (positions {labels.index(label)} and {position})")
        labels.append(label)
    return labels


def read_questions(path: str | Path) -> list[Question]:
    """Questions from a YAML, JSON or CSV file; every problem names the file, entry and field.

    YAML / JSON: a list of entries (or ``{questions: [...]}``), each ``{id (optional), text, options: [...]}``.
    YAML is read with every scalar as a string, so unquoted Yes / No / 1 stay the labels written.
    CSV: columns ``id`` (optional), ``text``, and ``option_1``, ``option_2``, ... (empty trailing cells ignored).
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"simulate.input: question file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        entries = _csv_entries(path)
    elif suffix in (".yaml", ".yml", ".json"):
        entries = _structured_entries(path, suffix)
    else:
        raise SimulationInputError(source, None, None, None, "unsupported file type: use .yaml, .yml, .json or .csv")
    if not entries:
        raise SimulationInputError(source, None, None, None, "has no questions")
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise SimulationInputError(
                source, index, None, None, f"must be a mapping with text and options, got {type(entry).__name__}")
        unknown = sorted(set(entry) - set(QUESTION_FIELDS))
        if unknown:
            raise SimulationInputError(
                source, index, None, unknown[0], f"unknown field; known fields are {list(QUESTION_FIELDS)}")
        question = make_question(entry.get("text"), entry.get("options"), entry.get("id"), source=source, index=index)
        if question.id in seen:
            raise SimulationInputError(source, index, question.id, "id", f"repeats the id of entry {seen[question.id]}")
        seen[question.id] = index
        questions.append(question)
    return questions


def read_text(path: Path) -> str:
    """A simulate input file as text: UTF-8 (a byte-order mark dropped), else an error naming the line and byte."""
    from simlab.data.files import decode_utf8

    return decode_utf8(path.read_bytes(), path)


def _structured_entries(path: Path, suffix: str) -> list:
    text = read_text(path)
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SimulationInputError(
                str(path), None, None, None, f"malformed JSON at line {err.lineno} column {err.colno}: {err.msg}"
            ) from err
    else:
        import yaml

        try:
            data = yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506 - BaseLoader builds only str/list/dict
        except yaml.YAMLError as err:
            raise SimulationInputError(str(path), None, None, None, f"malformed YAML: {err}") from err
    if isinstance(data, Mapping) and set(data) == {"questions"}:
        data = data["questions"]
    if not isinstance(data, list):
        raise SimulationInputError(
            str(path), None, None, None, "expected a list of questions (or a mapping with only 'questions:')")
    return data


def _csv_entries(path: Path) -> list[dict]:
    with io.StringIO(read_text(path), newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        option_columns = [c for c in header if c.startswith("option_")]
        unknown = [c for c in header if c not in ("id", "text") and c not in option_columns]
        if unknown:
            raise SimulationInputError(
                str(path), None, None, unknown[0], "unknown CSV column; use id, text, option_1, option_2, ...")
        order = sorted(option_columns, key=lambda c: int(c[7:]) if c[7:].isdigit() else -1)
        if order and (not order[0][7:].isdigit() or [int(c[7:]) for c in order] != list(range(1, len(order) + 1))):
            raise SimulationInputError(
                str(path), None, None, None, f"option columns must be option_1..option_N, got {option_columns}")
        entries = []
        for index, record in enumerate(reader):
            cells = [(record.get(c) or "").strip() for c in order]
            while cells and not cells[-1]:
                cells.pop()
            entry: dict[str, Any] = {"text": record.get("text"), "options": cells}
            if record.get("id"):
                entry["id"] = record["id"]
            if None in record:  # more cells than header columns
                raise SimulationInputError(
                    str(path), index, record.get("id") or None, None, "has more cells than the header has columns")
            entries.append(entry)
    return entries
