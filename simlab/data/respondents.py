"""WVS-7 respondent-level files as ``simlab build-populations`` reads them: which attribute comes from which column
and code, the age bands, and each respondent's population cell.

One file per country (``<ISO3>.csv.gz`` or ``.csv``; the official column layout, any extra columns ignored); only
the columns a build needs are read. The codes were checked (for the labels here) against the WVS-7 master
questionnaire (WVS document F00010738, 2017-2020, English) and the variable list ``questionnaire_wvs.csv`` of
GitHub DataSpi/spy-playground (``wvs_7/data/raw/``, commit 3777813), whose files the shared respondent folder is:

* Q260 "Respondent's sex": 1 Male, 2 Female (master questionnaire, Q260);
* Q262 "Age": years, written in (Q262); negative = missing;
* Q275R "Highest educational level: Respondent (recoded into 3 groups)": the variable list names it; the master
  questionnaire has only Q275 (ISCED 2011 codes 0..8). On all 72,184 respondents Q275R is 1 exactly for Q275 0-2,
  2 for 3-4 and 3 for 5-8: lower (at most lower secondary), middle (upper or post-secondary non-tertiary),
  higher (tertiary);
* Q288R "Income level (Recoded)": from Q288 (the 10-step income scale); on all respondents 1 exactly for steps
  1-3, 2 for 4-7 and 3 for 8-10: low, medium, high;
* H_URBRURAL "Urban-Rural": 1 Urban (city, town), 2 Rural (village) (master questionnaire, H1);
* W_WEIGHT "Weight": the design weight (mean 1 within a country; all positive in the shared files).

Negative codes are missing (don't know, no answer, not asked...): such a respondent is left out of a breakdown by
that attribute (counted); a non-negative code that is not listed here is an error naming the file, row and column.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simlab.data.build_wvs import BuildError
from simlab.data.populations import ATTRIBUTE_ORDER

# attribute -> (column, {code: label}); the labels' order is the order populations are listed in
CODED_ATTRIBUTES: dict[str, tuple[str, dict[int, str]]] = {
    "sex": ("Q260", {2: "female", 1: "male"}),
    "education": ("Q275R", {1: "lower", 2: "middle", 3: "higher"}),
    "income": ("Q288R", {1: "low", 2: "medium", 3: "high"}),
    "settlement": ("H_URBRURAL", {1: "urban", 2: "rural"}),
}
AGE_COLUMN = "Q262"
DEFAULT_AGE_BANDS = "16-29,30-49,50+"
RESPONDENT_SUFFIXES = (".csv.gz", ".csv")
CHECKSUMS = "SHA256SUMS"


@dataclass(frozen=True)
class AgeBand:
    """Ages ``low``..``high`` in years, both included; ``high`` None means no upper end ("50+")."""

    low: int
    high: int | None

    @property
    def label(self) -> str:
        return f"{self.low}+" if self.high is None else f"{self.low}-{self.high}"

    def holds(self, ages: np.ndarray) -> np.ndarray:
        return (ages >= self.low) & (True if self.high is None else ages <= self.high)


def parse_age_bands(text: str) -> tuple[AgeBand, ...]:
    """``"16-29,30-49,50+"`` -> the bands, ascending and not overlapping; anything else is a one-line error."""
    bands = []
    for part in (piece.strip() for piece in text.split(",")):
        match = re.fullmatch(r"(\d+)-(\d+)|(\d+)\+", part)
        if not match:
            raise BuildError(f"--age-bands: {part!r} is not LOW-HIGH or LOW+ (e.g. 16-29,30-49,50+)")
        low, high = (int(match[1]), int(match[2])) if match[1] else (int(match[3]), None)
        if high is not None and high < low:
            raise BuildError(f"--age-bands: {part!r} ends before it starts")
        if bands and (bands[-1].high is None or low <= bands[-1].high):
            raise BuildError(f"--age-bands: {part!r} overlaps or precedes {bands[-1].label}; list bands ascending")
        bands.append(AgeBand(low, high))
    return tuple(bands)


def parse_by(text: str) -> tuple[str, ...]:
    """``"sex,age"`` -> the attributes in ATTRIBUTE_ORDER (so one subgroup has one key); "" = whole countries."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = ["sex", "age", *[name for name in CODED_ATTRIBUTES if name != "sex"]]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise BuildError(f"--by: unknown attribute(s) {unknown}; known: {known}")
    if len(set(names)) != len(names):
        raise BuildError(f"--by: an attribute is named twice in {text!r}")
    return tuple(name for name in ATTRIBUTE_ORDER if name in names)


def attribute_column(name: str) -> str:
    return AGE_COLUMN if name == "age" else CODED_ATTRIBUTES[name][0]


def attribute_labels(name: str, bands: Sequence[AgeBand]) -> list[str]:
    return [band.label for band in bands] if name == "age" else list(CODED_ATTRIBUTES[name][1].values())


def cells(by: Sequence[str], bands: Sequence[AgeBand]) -> list[tuple[tuple[str, str], ...]]:
    """Every population cell as ((name, label), ...), the first attribute varying slowest."""
    result: list[tuple[tuple[str, str], ...]] = [()]
    for name in by:
        result = [(*cell, (name, label)) for cell in result for label in attribute_labels(name, bands)]
    return result


def cell_of_respondents(frame: pd.DataFrame, by: Sequence[str], bands: Sequence[AgeBand],
                        path: Path) -> tuple[np.ndarray, dict[str, int]]:
    """Each respondent's cell index (into :func:`cells`; -1 = left out) and, per attribute, how many respondents
    lack it (a negative code, or an age in no band). An unlisted non-negative code is a BuildError."""
    index = np.zeros(len(frame), dtype=np.int64)
    missing = np.zeros(len(frame), dtype=bool)
    without = {}
    for name in by:
        column = attribute_column(name)
        codes = frame[column].to_numpy()
        labels = attribute_labels(name, bands)
        position = np.full(len(frame), -1, dtype=np.int64)
        if name == "age":
            for number, band in enumerate(bands):
                position[band.holds(codes) & (codes >= 0)] = number
        else:
            for number, code in enumerate(CODED_ATTRIBUTES[name][1]):
                position[codes == code] = number
            bad = (codes >= 0) & (position < 0)
            if bad.any():
                row = int(frame.index[int(np.argmax(bad))])
                raise BuildError(f"{path}: data row {row + 1}, column {column}: code {codes[bad][0]} is not a {name} "
                                 f"code (known: {dict(CODED_ATTRIBUTES[name][1])}; negative codes mean missing)")
        lacking = position < 0
        without[name] = int(lacking.sum())
        missing |= lacking
        index = index * len(labels) + np.maximum(position, 0)
    index[missing] = -1
    return index, without


def respondent_files(folder: str | Path) -> list[Path]:
    """The folder's ``*.csv.gz`` / ``*.csv`` files, by name; none is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BuildError(f"{folder}: --respondents is not a folder")
    files = sorted(path for path in folder.iterdir() if path.is_file() and path.name.endswith(RESPONDENT_SUFFIXES))
    if not files:
        raise BuildError(f"{folder}: no respondent files (*.csv.gz or *.csv) in --respondents")
    return files


def file_checksums(files: Sequence[Path]) -> dict[str, dict[str, object]]:
    """name -> {sha256, listed}: each file's sha256, checked against the folder's SHA256SUMS when it has one (a file
    that differs from its listed sum is an error: the build would not be the documented one)."""
    listed: dict[str, str] = {}
    manifest = files[0].parent / CHECKSUMS if files else None
    if manifest is not None and manifest.is_file():
        for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
            digest, _, name = line.strip().partition("  ")
            if line.strip() and (not re.fullmatch(r"[0-9a-f]{64}", digest) or not name):
                raise BuildError(f"{manifest}: line {number} is not '<sha256>  <file name>'")
            if name:
                listed[name] = digest
    result: dict[str, dict[str, object]] = {}
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if path.name in listed and listed[path.name] != digest:
            raise BuildError(f"{path}: sha256 {digest} differs from {listed[path.name]} in {manifest}")
        result[path.name] = {"sha256": digest, "listed_in_SHA256SUMS": path.name in listed}
    return result
