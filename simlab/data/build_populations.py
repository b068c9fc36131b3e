"""Build population rows (a country's subgroups: sex x age band, education...) from WVS-7 respondent-level files.

    simlab build-populations --respondents DIR --by sex,age --out DIR

One row per (population, question): the paper's row (the rules, split and row order of ``simlab build-wvs``, whose
functions this reuses) plus ``population`` ({"country": ..., "sex": ..., "age": ...}), ``n`` (respondents with a
valid answer in the cell, unweighted), ``n_eff`` (Kish: (sum w)^2 / sum w^2, 2 decimals) and ``country_shares``
(the whole country's shares on the question, same weights). Shares are weighted by ``--weights`` (default W_WEIGHT;
``none`` = unweighted) and the instruction is the default :class:`~simlab.data.populations.PopulationWording`.
``--by ""`` gives whole-country rows with the WVS fields only (plus ``n_eff`` when weighted); with ``--weights none``
they are exactly what ``build-wvs`` makes from the same respondents.

Nothing is dropped silently: a respondent lacking an attribute of ``--by`` is left out of that breakdown, a cell with
fewer than ``--min-n`` valid answers is not written, a (country, question) nobody answered is skipped; all are
counted on stderr and in ``populations_build.json`` beside the outputs, with the settings and the input files'
sha256 (checked against the folder's SHA256SUMS). Attribute codes and their sources: :mod:`simlab.data.respondents`.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from simlab.common import commandline
from simlab.common.files import write_text
from simlab.data import build_wvs as wvs
from simlab.data import respondents as resp
from simlab.data.build_wvs import BuildError, log
from simlab.data.files import data_file_candidates, plain_name, read_data_bytes
from simlab.data.populations import Population, PopulationWording
from simlab.paths import data_root

OUTPUT_FILES = {"train": "populations_train.json", "valid": "populations_valid.json", "test": "populations_test.json"}
REPORT_FILE = "populations_build.json"
DEFAULT_WEIGHTS = "W_WEIGHT"
DEFAULT_MIN_N = 50


@dataclass(frozen=True)
class Settings:
    by: tuple[str, ...] = ("sex", "age")
    weights: str | None = DEFAULT_WEIGHTS  # a column name; None = unweighted
    age_bands: tuple[resp.AgeBand, ...] = resp.parse_age_bands(resp.DEFAULT_AGE_BANDS)
    min_n: int = DEFAULT_MIN_N
    skip: dict[int, str] = field(default_factory=lambda: dict(wvs.DEFAULT_SKIP_COUNTRIES))
    wording: PopulationWording = field(default_factory=PopulationWording)


@dataclass
class CountryCells:
    """One country's aggregates: question id -> (country shares, per cell (shares, n, n_eff) or None)."""

    name: str
    file: str
    respondents: int
    left_out: int
    without: dict[str, int]
    questions: dict[str, tuple[dict[str, float], list[tuple[dict[str, float], int, float] | None]]]


def kish(values: np.ndarray, weights: np.ndarray | None) -> float:
    """Kish's effective sample size of the valid answers: (sum w)^2 / sum w^2 (= n without weights)."""
    keep = wvs.valid_answers(values)
    if weights is None:
        return float(keep.sum())
    kept = weights[keep]
    return float(kept.sum() ** 2 / (kept**2).sum()) if kept.size else 0.0


def aggregate(frame: pd.DataFrame, questions: Sequence[dict[str, Any]], cell_index: np.ndarray, n_cells: int,
              weights: np.ndarray | None) -> dict[str, Any]:
    """Country and cell distributions of one country's respondents (in file order, which fixes the key order)."""
    members = [np.flatnonzero(cell_index == cell) for cell in range(n_cells)]
    whole = n_cells == 1 and bool((cell_index == 0).all())
    result = {}
    for entry in questions:
        values = frame[wvs.question_column(entry)].to_numpy()
        country = wvs.distribution(values, entry["codes"], weights)
        if country is None:
            continue  # not asked in this country
        per_cell: list[tuple[dict[str, float], int, float] | None] = []
        for rows in members:
            cell_values = values if whole else values[rows]
            cell_weights = None if weights is None else (weights if whole else weights[rows])
            built = country if whole else wvs.distribution(cell_values, entry["codes"], cell_weights)
            per_cell.append(None if built is None else (built[0], built[1], kish(cell_values, cell_weights)))
        result[entry["id"]] = (country[0], per_cell)
    return result


def read_respondent_file(path: Path, questions: Sequence[dict[str, Any]], settings: Settings,
                         countries: dict[str, dict[str, Any]]) -> tuple[pd.DataFrame, int]:
    """The columns a build needs, checked (codes, countries, weights), without the rows of skipped countries; and
    how many rows were read."""
    header = wvs.read_header(path)[1]
    needed = {wvs.question_column(entry): "the questionnaire" for entry in questions}
    needed.update({resp.attribute_column(name): f"--by {name}" for name in settings.by})
    if settings.weights:
        needed[settings.weights] = "--weights"
    missing = [f"{column} ({why})" for column, why in needed.items() if column not in header]
    if missing:
        raise BuildError(f"{path}: column(s) missing: {', '.join(missing)}")
    codes = list(dict.fromkeys([*(wvs.question_column(entry) for entry in questions),
                                *(resp.attribute_column(name) for name in settings.by)]))
    frame = wvs.read_wvs_csv(path, codes, (settings.weights,) if settings.weights else ())
    read = len(frame)
    frame = wvs.check_country_codes(frame, countries, settings.skip, path)
    wvs.check_answer_codes(frame, questions, path)
    if settings.weights:
        weights = frame[settings.weights]
        if (weights <= 0).any():
            row = int(weights.index[int(np.argmax((weights <= 0).to_numpy()))])
            raise BuildError(f"{path}: data row {row + 1}, column {settings.weights}: weight {weights[row]} is not "
                             f"positive")
    return frame, read


def read_countries(files: Sequence[Path], questions: Sequence[dict[str, Any]], settings: Settings,
                   countries: dict[str, dict[str, Any]],
                   file_report: dict[str, dict[str, Any]]) -> dict[int, CountryCells]:
    """WVS country code -> its aggregates, over every respondent file (a country in two files is an error); each
    file's respondents, those skipped (--skip-country) and its countries go into ``file_report``."""
    names = {}
    for name, entry in countries.items():
        names.setdefault(entry.get("wvs_code"), name)
    found: dict[int, CountryCells] = {}
    n_cells = len(resp.cells(settings.by, settings.age_bands))
    for path in tqdm(files, desc="build-populations: countries", unit="file"):
        frame, read = read_respondent_file(path, questions, settings, countries)
        file_report[path.name].update(respondents=read, skipped_respondents=read - len(frame), countries=[])
        for code, group in frame.groupby(wvs.COUNTRY_COLUMN, sort=False):
            code = int(code)
            if code in found:
                raise BuildError(f"{path}: country {names[code]} ({wvs.COUNTRY_COLUMN}={code}) is also in "
                                 f"{found[code].file}")
            cell_index, without = resp.cell_of_respondents(group, settings.by, settings.age_bands, path)
            weights = group[settings.weights].to_numpy() if settings.weights else None
            found[code] = CountryCells(names[code], path.name, len(group), int((cell_index < 0).sum()), without,
                                       aggregate(group, questions, cell_index, n_cells, weights))
            file_report[path.name]["countries"].append(names[code])
    return found


def make_population_row(entry: dict[str, Any], population: Population, cell: tuple[dict[str, float], int, float],
                        country_shares: dict[str, float], data_type: str, settings: Settings) -> dict[str, Any]:
    """The paper's row (build_wvs.make_row) with the population's instruction, and its population fields."""
    dist, n, n_eff = cell
    row = wvs.make_row(entry, population.country, dist, n, data_type)
    row["instruction"] = settings.wording.instruction(population)
    if population.attributes:
        del row["n"]
        row.update(population=population.as_dict(), n=n, n_eff=round(n_eff, 2), country_shares=country_shares)
    elif settings.weights:
        row["n_eff"] = round(n_eff, 2)
    return row


def build_rows(found: dict[int, CountryCells], questionnaire: list[dict[str, Any]],
               countries: dict[str, dict[str, Any]], settings: Settings) -> tuple[dict[str, list], dict[str, Any]]:
    """Rows per output file in the build_wvs order (part, country, then population, then question), and per part
    what was written and what was not."""
    questions = wvs.used_questions(questionnaire)
    populations = resp.cells(settings.by, settings.age_bands)
    outputs: dict[str, list[dict[str, Any]]] = {key: [] for key in OUTPUT_FILES}
    parts: dict[str, Any] = {}
    for data_type, country_group, question_group, file_key in wvs.PARTS:
        members = wvs.group_countries(countries, country_group)
        part_questions = [entry for entry in questions if entry["group"] == question_group]
        present = [(name, code) for name, code in members if code in found]
        rows, below, not_asked = [], 0, 0
        for name, code in present:
            cells = found[code].questions
            not_asked += sum(entry["id"] not in cells for entry in part_questions)
            for number, attributes in enumerate(populations):
                population = Population(name, attributes)
                for entry in part_questions:
                    if entry["id"] not in cells:
                        continue
                    country_shares, per_cell = cells[entry["id"]]
                    cell = per_cell[number]
                    if cell is None or cell[1] < settings.min_n:
                        below += 1
                        continue
                    rows.append(make_population_row(entry, population, cell, country_shares, data_type, settings))
        outputs[file_key].extend(rows)
        parts[data_type] = {
            "file": OUTPUT_FILES[file_key], "cells": f"{country_group}x{question_group}", "rows": len(rows),
            "countries": len(present), "populations": len(present) * len(populations),
            "questions": len(part_questions), "cells_below_min_n": below,
            "country_questions_not_asked": not_asked,
            "respondents_left_out": sum(found[code].left_out for _, code in present),
            "absent_countries": [name for name, code in members if code not in found]}
        log(f"{data_type} ({country_group}x{question_group}): {len(rows)} rows, {len(present)} countries x "
            f"{len(populations)} populations x {len(part_questions)} questions; {below} cells below n={settings.min_n} "
            f"not written; {not_asked} (country, question) not asked; {parts[data_type]['respondents_left_out']} "
            f"respondents lack an attribute of --by"
            + (f"; no respondent file: {', '.join(parts[data_type]['absent_countries'])}"
               if parts[data_type]["absent_countries"] else ""))
    return outputs, parts


def compress(data: bytes) -> bytes:
    """xz as scripts/pack_data.py writes it (strongest preset, CRC64): the same bytes for the same input."""
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9 | lzma.PRESET_EXTREME)


def write_outputs(outputs: dict[str, list], out_dir: Path, compressed: bool) -> dict[str, dict[str, Any]]:
    """The JSON lists as build_wvs writes them (indent 4, UTF-8, no trailing newline), optionally as .json.xz;
    returns name -> rows and sha256 of the uncompressed bytes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for key, name in OUTPUT_FILES.items():
        data = json.dumps(outputs[key], indent=4, ensure_ascii=False).encode("utf-8")
        path = out_dir / (f"{name}.xz" if compressed else name)
        if compressed:
            path.write_bytes(compress(data))
        else:
            write_text(path, data.decode("utf-8"))
        log(f"wrote {path}: {len(outputs[key])} rows")
        written[name] = {"rows": len(outputs[key]), "sha256": hashlib.sha256(data).hexdigest()}
    return written


def file_entry(path: Path) -> dict[str, str]:
    """A settings file as the report names it: its name (no machine path) and the sha256 of its content."""
    found = next((p for p in data_file_candidates(path, Path()) if p.is_file()), path)
    return {"file": plain_name(found.name), "sha256": hashlib.sha256(read_data_bytes(found)).hexdigest()}


def build(respondents: str | Path, questionnaire_path: str | Path, countries_path: str | Path, out_dir: str | Path,
          settings: Settings | None = None, compressed: bool = False) -> dict[str, Any]:
    """Read, check, aggregate, write the rows and the report; returns the report."""
    settings = settings or Settings()
    questionnaire = wvs.load_questionnaire(questionnaire_path)
    countries = wvs.load_countries(countries_path)
    questions = wvs.used_questions(questionnaire)
    files = resp.respondent_files(respondents)
    checksums = resp.file_checksums(files)
    found = read_countries(files, questions, settings, countries, checksums)
    outputs, parts = build_rows(found, questionnaire, countries, settings)
    if not any(outputs.values()):
        raise BuildError(f"{respondents}: no population cell of the split's countries reaches --min-n "
                         f"{settings.min_n}; nothing written")
    out_dir = Path(out_dir)
    written = write_outputs(outputs, out_dir, compressed)
    report = {
        "command": "simlab build-populations",
        "settings": {"by": list(settings.by), "weights": settings.weights,
                     "age_bands": [band.label for band in settings.age_bands], "min_n": settings.min_n,
                     "skip_countries": {str(code): name for code, name in sorted(settings.skip.items())},
                     "questionnaire": file_entry(Path(questionnaire_path)),
                     "countries": file_entry(Path(countries_path))},
        "respondent_files": {"folder": Path(respondents).resolve().name, "files": checksums},
        "parts": parts,
        "countries": {cells.name: {"file": cells.file, "respondents": cells.respondents,
                                   "left_out": cells.left_out, "without": cells.without}
                      for cells in found.values()},
        "outputs": written,
    }
    write_text(out_dir / REPORT_FILE, json.dumps(report, indent=4, ensure_ascii=False) + "\n")
    left = {cells.name: cells.left_out for cells in found.values() if cells.left_out}
    log(f"{len(found)} countries; respondents left out of the breakdown (an attribute of --by missing): "
        + (", ".join(f"{name} {count}" for name, count in left.items()) or "none"))
    log(f"wrote {out_dir / REPORT_FILE}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = commandline.parser("build-populations", description=__doc__.split("\n\n")[0])
    parser.add_argument("--respondents", required=True, help="folder of <ISO3>.csv.gz respondent files (WVS-7 layout)")
    parser.add_argument("--by", default="sex,age", help="attributes: sex, age, education, income, settlement "
                        "(comma-separated; \"\" = whole countries; default sex,age)")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help="weight column, or none (default W_WEIGHT)")
    parser.add_argument("--age-bands", default=resp.DEFAULT_AGE_BANDS, help="LOW-HIGH or LOW+, ascending")
    parser.add_argument("--min-n", type=int, default=DEFAULT_MIN_N, help="smallest n written (default 50)")
    parser.add_argument("--questionnaire", default=None, help="questionnaire_en.json (default: the data root's)")
    parser.add_argument("--countries", help="countries.json (default: the one next to --questionnaire)")
    parser.add_argument("--skip-country", type=int, action="append", metavar="CODE",
                        help="B_COUNTRY code whose rows are dropped (repeatable; default: 909 Northern Ireland)")
    parser.add_argument("--compress", action="store_true", help="write .json.xz files (deterministic)")
    parser.add_argument("--out", required=True, help="output folder for populations_{train,valid,test}.json")
    args = parser.parse_args(argv)
    if args.min_n < 1:
        raise BuildError(f"--min-n must be at least 1, got {args.min_n}")
    skip = dict(wvs.DEFAULT_SKIP_COUNTRIES)
    if args.skip_country is not None:
        skip = {code: wvs.DEFAULT_SKIP_COUNTRIES.get(code, "given by --skip-country") for code in args.skip_country}
    settings = Settings(by=resp.parse_by(args.by), weights=None if args.weights.lower() == "none" else args.weights,
                        age_bands=resp.parse_age_bands(args.age_bands), min_n=args.min_n, skip=skip)
    questionnaire = args.questionnaire or data_root() / "wvs7" / "questionnaire_en.json"
    countries = args.countries or Path(questionnaire).with_name("countries.json")
    build(args.respondents, questionnaire, countries, args.out, settings, args.compress)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BuildError as err:
        sys.exit(f"error: {err}")
