"""Survey rows in the paper's JSON format: parsing and validation.

Every problem is reported with the file, the row index and the field, so a bad row is never
dropped, truncated or silently repaired.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simlab.data.files import find_data_file, plain_name, read_data_bytes
from simlab.data.populations import Attributes, Population, population_key
from simlab.data.prompts import ENGLISH_COUNTRY_PATTERN

OPTION_PATTERN = re.compile(r"^\((?P<letter>[A-Z])\)(?P<label>.*)$", re.DOTALL)
REQUIRED_FIELDS = ("id", "instruction", "input", "options", "options_dist", "data_type")
MAX_OPTIONS = 26  # letters A..Z
SHARE_SCALES = (100.0, 1.0)  # percents (the WVS files) or proportions (the Pew files)
# Relative: rounding moves published sums a little (WVS percents within +-0.02 of 100, Pew proportions of up to
# 13 options within +-0.004 of 1); a real error moves them more (a row at 107% or 50%).
SUM_TOLERANCE = 0.01
MAX_INTEGER = 2**53  # the largest integer a float holds exactly: a share or count beyond it is no survey's


class RowError(ValueError):
    """A survey row that cannot be used, located by file, row index and field."""

    def __init__(self, path: str | Path, index: int | None, field_name: str | None, message: str):
        self.path, self.index, self.field_name, self.message = str(path), index, field_name, message
        where = f"{path}"
        if index is not None:
            where += f": row {index}"
        if field_name is not None:
            where += f": field '{field_name}'"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class SurveyRow:
    """One (country, question) cell with its human answer distribution, in option order."""

    subset: str
    question_id: str
    country: str
    instruction: str
    question: str
    options: tuple[str, ...]  # as written in the data, e.g. "(A)Very important"
    letters: tuple[str, ...]
    target: tuple[float, ...]  # normalised to sum 1, in option order
    n: int | None
    source: str
    index: int  # position in the source file
    prompt_country: str | None = None  # the country the prompt names, when [ctrl] replaced it
    option_order: tuple[int, ...] | None = None  # original option positions, when options were shuffled
    survey: str = "wvs7"  # which survey the question belongs to: a question is (survey, id), never the id alone
    # the file as the config names it (wvs7/sft_wvs_valid.json), without a compression suffix: with ``index`` the
    # row's identity for seeded draws, the same wherever the data folder lies and whether the file is compressed
    file: str = ""
    # populations beyond countries (simlab.data.populations): a whole country has no attributes
    attributes: Attributes = ()  # ((name, value), ...), e.g. (("sex", "female"), ("age", "30-49"))
    n_eff: float | None = None  # Kish effective sample size under the survey weights (None: unweighted or unknown)
    country_target: tuple[float, ...] | None = None  # the whole country's shares, option order (the breakdown use)
    prompt_attributes: Attributes | None = None  # the attributes the prompt names, when [ctrl] replaced them

    @property
    def population(self) -> Population:
        return Population(self.country, self.attributes)

    @property
    def population_key(self) -> str:
        """The row's population in files and tables: the country for a whole country, else "Kenya | sex=female"."""
        return population_key(self.country, self.attributes)

    @property
    def sample_size(self) -> float | None:
        """The respondents the row's shares are worth: ``n_eff`` under weights, else ``n``."""
        return self.n_eff if self.n_eff is not None else self.n

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(OPTION_PATTERN.match(o).group("label") for o in self.options)  # type: ignore[union-attr]


@dataclass
class LoadedRows:
    rows: list[SurveyRow]
    invalid: list[dict[str, Any]] = field(default_factory=list)  # only filled when dropping is asked for


Fail = Callable[[str | None, str], RowError]  # a RowError for this row: (field, message) -> error


def parse_row(
    raw: Any,
    *,
    path: str | Path,
    index: int,
    subset_names: dict[str, str],
    country_pattern: re.Pattern[str],
    renormalize: bool = False,
    survey: str = "wvs7",
    file: str = "",
) -> SurveyRow:
    """Validate one raw JSON row and turn it into a SurveyRow (raises RowError).

    Shares must sum to 100 (percents) or 1 (proportions) within :data:`SUM_TOLERANCE`; any other sum means the
    row is wrong, unless ``renormalize`` asks to rescale every row whose shares are not all zero.
    The fields are checked in a fixed order (the first problem is the one reported).
    """

    def fail(field_name: str | None, message: str) -> RowError:
        return RowError(path, index, field_name, message)

    check_object(raw, fail)
    subset = parse_subset(raw["data_type"], subset_names, fail)
    instruction, country = parse_instruction(raw["instruction"], country_pattern, fail)
    question = raw["input"]
    if not isinstance(question, str):
        raise fail("input", "must be a string")
    if not question.strip():
        raise fail("input", "is empty: the row asks no question")
    options = raw["options"]
    letters = parse_option_letters(options, fail)
    values = parse_shares(raw["options_dist"], letters, renormalize, fail)
    n = parse_sample_size(raw.get("n"), fail)
    question_id = parse_question_id(raw["id"], fail)
    attributes = parse_population(raw.get("population"), country, fail)
    n_eff = parse_effective_size(raw.get("n_eff"), n, fail)
    country_target = None
    if raw.get("country_shares") is not None:
        shares = parse_shares(raw["country_shares"], letters, renormalize, fail, field_name="country_shares")
        country_target = tuple(v / sum(shares) for v in shares)
    total = sum(values)
    return SurveyRow(
        subset=subset,
        question_id=question_id,
        country=country,
        instruction=instruction,
        question=question,
        options=tuple(options),
        letters=tuple(letters),
        target=tuple(v / total for v in values),
        n=n,
        source=str(path),
        index=index,
        survey=survey,
        file=file,
        attributes=attributes,
        n_eff=n_eff,
        country_target=country_target,
    )


def check_object(raw: Any, fail: Fail) -> None:
    """A JSON object with every required field."""
    if not isinstance(raw, dict):
        raise fail(None, f"expected a JSON object, got {type(raw).__name__}")
    for name in REQUIRED_FIELDS:
        if name not in raw:
            raise fail(name, "missing field")


def parse_subset(data_type: Any, subset_names: dict[str, str], fail: Fail) -> str:
    """The subset the row's ``data_type`` stands for in this data config."""
    if data_type not in subset_names:
        raise fail("data_type", f"unknown data_type {data_type!r}; this data config knows {sorted(subset_names)}")
    return subset_names[data_type]


def parse_instruction(instruction: Any, country_pattern: re.Pattern[str], fail: Fail) -> tuple[str, str]:
    """The instruction and the country it names (``country_pattern``'s group ``country``, stripped)."""
    if not isinstance(instruction, str):
        raise fail("instruction", "must be a string")
    match = country_pattern.search(instruction)
    if match is None or not match.group("country").strip():
        raise fail("instruction", f"names no country (pattern {country_pattern.pattern!r}): {instruction!r}")
    return instruction, match.group("country").strip()


def parse_option_letters(options: Any, fail: Fail) -> list[str]:
    """The letters of 2 to 26 options, each written '(L)label', no letter repeated."""
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise fail("options", "must be a list of strings")
    if len(options) < 2:
        raise fail("options", f"needs at least 2 options, got {len(options)}")
    if len(options) > MAX_OPTIONS:
        raise fail("options", f"at most {MAX_OPTIONS} options (letters A-Z), got {len(options)}")
    letters: list[str] = []
    for position, option in enumerate(options):
        option_match = OPTION_PATTERN.match(option)
        if option_match is None:
            raise fail("options", f"option {position} {option!r} has no '(L)' letter prefix")
        letter = option_match.group("letter")
        if letter in letters:
            raise fail("options", f"letter {letter} is repeated")
        letters.append(letter)
    return letters


def parse_shares(dist: Any, letters: list[str], renormalize: bool, fail: Fail,
                 field_name: str = "options_dist") -> list[float]:
    """``options_dist`` (or another ``field_name`` of shares) as floats in option order: one finite share >= 0 per
    letter, not all zero, summing to 100 or 1 (unless ``renormalize``)."""
    if not isinstance(dist, dict):
        raise fail(field_name, "must be an object mapping option letters to shares")
    if set(dist) != set(letters):
        missing, extra = sorted(set(letters) - set(dist)), sorted(set(dist) - set(letters))
        raise fail(field_name, f"keys must be the option letters {letters}; missing {missing}, unexpected {extra}")
    values = []
    for letter in letters:
        value = dist[letter]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(field_name, f"share of {letter} is not a number: {value!r}")
        if isinstance(value, int) and abs(value) > MAX_INTEGER:  # would not fit a float (OverflowError)
            raise fail(field_name, f"share of {letter} is an integer too large to be a share (over 2**53)")
        if math.isnan(value) or math.isinf(value):
            raise fail(field_name, f"share of {letter} is {value}")
        if value < 0:
            raise fail(field_name, f"share of {letter} is negative: {value}")
        values.append(float(value))
    total = sum(values)
    if total <= 0:
        raise fail(field_name, "all shares are zero")
    if math.isinf(total):
        raise fail(field_name, "shares sum to more than a float holds")
    if not renormalize and not any(abs(total - scale) <= SUM_TOLERANCE * scale for scale in SHARE_SCALES):
        raise fail(
            field_name,
            f"shares sum to {total:.6g}, neither 100 (percents) nor 1 (proportions) within {SUM_TOLERANCE:.0%}; fix "
            f"the row, or set data.renormalize=true to rescale such rows",
        )
    return values


def parse_sample_size(n: Any, fail: Fail) -> int | None:
    """The respondents behind the row: a positive integer, or None when unknown."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise fail("n", f"must be a positive integer or null, got {n!r}")
    if n is not None and n > MAX_INTEGER:
        raise fail("n", "is an integer too large to be a count of respondents (over 2**53)")
    return n


def parse_population(population: Any, country: str, fail: Fail) -> Attributes:
    """A row's ``population`` object: its country must be the one the instruction names; its other keys are the
    subgroup's attributes. No object: a whole country."""
    if population is None:
        return ()
    try:
        parsed = Population.from_mapping(population)
    except ValueError as err:
        raise fail("population", str(err)) from err
    if parsed.country != country:
        raise fail("population", f"country {parsed.country!r} differs from the instruction's {country!r}")
    return parsed.attributes


def parse_effective_size(n_eff: Any, n: int | None, fail: Fail) -> float | None:
    """Kish's effective sample size: a finite number > 0, at most ``n`` when ``n`` is known; None when unknown."""
    if n_eff is None:
        return None
    if isinstance(n_eff, int) and not isinstance(n_eff, bool) and n_eff > MAX_INTEGER:  # would not fit a float
        raise fail("n_eff", "is an integer too large to be an effective sample size (over 2**53)")
    if isinstance(n_eff, bool) or not isinstance(n_eff, (int, float)) or not math.isfinite(n_eff) or n_eff <= 0:
        raise fail("n_eff", f"must be a positive finite number or null, got {n_eff!r}")
    if n is not None and n_eff > n * (1 + 1e-9):
        raise fail("n_eff", f"{n_eff} exceeds n={n} (an effective sample size is at most the respondents)")
    return float(n_eff)


def parse_question_id(question_id: Any, fail: Fail) -> str:
    if isinstance(question_id, bool) or not isinstance(question_id, (str, int)):
        raise fail("id", f"must be a string or an integer, got {question_id!r}")
    return str(question_id)


def _read_json_rows(path: Path) -> list[Any]:
    raw = read_data_bytes(path)  # plain, or decompressed from .xz / .gz
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise RowError(path, None, None,
                       f"not UTF-8: byte {raw[err.start]:#04x} on line {line} (offset {err.start})") from err
    if plain_name(path.name).endswith(".jsonl"):
        raw_rows = []
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw_rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise RowError(path, len(raw_rows), None, f"malformed JSON on line {line_number}: {err.msg}") from err
            except ValueError as err:  # e.g. an integer of more than 4300 digits
                raise RowError(path, len(raw_rows), None, f"unreadable JSON on line {line_number}: {err}") from err
        return raw_rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise RowError(path, None, None, f"malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from err
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise RowError(path, None, None, f"unreadable JSON: {err}") from err
    if not isinstance(data, list):
        raise RowError(path, None, None, f"expected a JSON list of rows, got {type(data).__name__}")
    return data


def read_rows(
    path: str | Path,
    *,
    subset_names: dict[str, str],
    country_pattern: str = ENGLISH_COUNTRY_PATTERN,
    drop_invalid: bool = False,
    renormalize: bool = False,
    survey: str = "wvs7",
    name: str | None = None,
) -> LoadedRows:
    """Read and validate every row of a paper-format JSON (or JSONL) file, plain or compressed (``path`` itself,
    else ``path`` + .xz / .gz).

    By default the first bad row raises. With ``drop_invalid`` bad rows are collected in
    ``LoadedRows.invalid`` (index, id, error) for the caller to log and save. ``name`` is the file as the config
    names it (default: the file name), kept in each row as its location-independent identity.
    """
    path = find_data_file(path, Path())
    file = plain_name(name if name is not None else path.name)
    pattern = re.compile(country_pattern)
    loaded = LoadedRows(rows=[])
    for index, raw in enumerate(_read_json_rows(path)):
        try:
            loaded.rows.append(
                parse_row(raw, path=path, index=index, subset_names=subset_names, country_pattern=pattern,
                          renormalize=renormalize, survey=survey, file=file)
            )
        except RowError as err:
            if not drop_invalid:
                raise
            row_id = raw.get("id") if isinstance(raw, dict) else None
            loaded.invalid.append({"file": str(path), "index": index, "id": row_id, "error": str(err)})
    return loaded
