"""Build the paper's country-level WVS-7 files from the official respondent-level CSV.

The WVS licence forbids redistributing respondent-level data, so simlab ships only the derived
country-level rows; this builder lets anyone with the official
``WVS_Cross-National_Wave_7_csv_v5_0.csv`` regenerate them (see docs/DATA.md):

    simlab build-wvs --csv WVS_Cross-National_Wave_7_csv_v5_0.csv --out DIR

The questionnaire and countries default to those of the data root (the copy shipped in the
package, or $SIMLAB_DATA); ``--questionnaire`` / ``--countries`` name others (plain or .xz).

Rules (those of the paper's construct_sft_data.py, as documented in the README):

* a distribution uses answer codes 0..10 only (negative codes = missing, dropped); code k
  becomes the letter of the questionnaire entry's ``codes`` map (0 -> X, 1 -> A, ...);
  unweighted percentages; options nobody chose get 0.0; ``n`` = valid respondents;
* a (country, question) with no valid answer is skipped (not asked there) and counted;
* split: train = C1xQ1, valid = C1xQ2, test_1 = C1xQ3, test_2..4 = C2xQ1..Q3,
  test_5..7 = C3xQ1..Q3, excluded questions left out;
* row order: part by part, country by country, questions ascending. C1 countries by WVS code;
  C2 and C3 countries in the paper's order (``PAPER_COUNTRY_ORDER``, the order of the shared
  files and of the README), which is *not* the order of countries.json (sorted by WVS code);
  group members missing from that list follow in countries.json's order;
* ``options_dist`` keys: letters in the order the answers first occur in the country's rows,
  then the zero-filled options in option order (this reproduces the shared files; the order
  carries no meaning).

Checked on respondents reconstructed from the shared rows (train rows with ``n``, valid, test):
the output is identical to the shared files (values, key order, serialisation; sft_wvs_test.json
byte for byte), except that the shared valid file has no ``n`` field.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from simlab.common import commandline
from simlab.common.files import write_text
from simlab.data.files import data_file_candidates, read_data_bytes
from simlab.data.prompts import PAPER_INSTRUCTION
from simlab.paths import data_root

COUNTRY_COLUMN = "B_COUNTRY"
MISSING = -99  # blank cells become this code, i.e. missing like the official negative codes

# (data_type, country group, question group, output file key), in output order.
PARTS = (
    ("train", "C1", "Q1", "train"),
    ("valid", "C1", "Q2", "valid"),
    ("test_1", "C1", "Q3", "test"),
    ("test_2", "C2", "Q1", "test"),
    ("test_3", "C2", "Q2", "test"),
    ("test_4", "C2", "Q3", "test"),
    ("test_5", "C3", "Q1", "test"),
    ("test_6", "C3", "Q2", "test"),
    ("test_7", "C3", "Q3", "test"),
)
OUTPUT_FILES = {"train": "sft_wvs_train.json", "valid": "sft_wvs_valid.json", "test": "sft_wvs_test.json"}

# The paper lists C2 and C3 in this order (construct_sft_data.py); the shared files follow it.
PAPER_COUNTRY_ORDER = {
    "C2": ["Egypt", "Ethiopia", "Kenya", "Libya", "Morocco", "Nigeria", "Tunisia", "Zimbabwe"],
    "C3": ["Malaysia", "Thailand", "Czechia", "Greece", "Nigeria", "Morocco", "Peru", "Colombia",
           "Mexico", "Puerto Rico", "New Zealand"],
}

# In WVS-7 v5.0 but in none of the paper's groups: their rows are dropped (and reported), any
# other code missing from countries.json is an error.
DEFAULT_SKIP_COUNTRIES = {909: "Northern Ireland"}


class BuildError(ValueError):
    """An input the builder refuses to guess about; the message names the file and place."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_json(path: str | Path, what: str) -> Any:
    """A JSON file, or a BuildError naming it (missing, not UTF-8, not JSON)."""
    path = Path(path)
    found = next((p for p in data_file_candidates(path, Path()) if p.is_file()), None)  # plain, else .xz / .gz
    if found is None:
        raise BuildError(f"{path}: {what} file does not exist (nor with .xz or .gz added)")
    path = found
    try:
        raw = read_data_bytes(path)
    except ValueError as err:  # a damaged .xz / .gz
        raise BuildError(str(err)) from err
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise BuildError(f"{path}: {what} file is not UTF-8 (byte offset {err.start})") from err
    except json.JSONDecodeError as err:
        raise BuildError(f"{path}: {what} file is not JSON (line {err.lineno} column {err.colno}: {err.msg})") from err


def load_questionnaire(path: str | Path) -> list[dict[str, Any]]:
    """Questionnaire entries (id, group, excluded, input, options, codes), sorted by id."""
    path = Path(path)
    entries = read_json(path, "questionnaire")
    if not isinstance(entries, list):
        raise BuildError(f"{path}: expected a JSON list of question entries")
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise BuildError(f"{path}: entry {position} is not a JSON object")
        missing = [key for key in ("id", "group", "excluded", "input", "options", "codes") if key not in entry]
        if missing:
            raise BuildError(f"{path}: entry {position} lacks {missing}")
    return sorted(entries, key=lambda entry: int(entry["id"]))


def load_countries(path: str | Path) -> dict[str, dict[str, Any]]:
    """countries.json: display name -> {wvs_code, groups, ...}, in the file's order."""
    path = Path(path)
    countries = read_json(path, "countries (--countries, default: countries.json beside --questionnaire)")
    if not isinstance(countries, dict):
        raise BuildError(f"{path}: expected a JSON object mapping country names to entries")
    return countries


def used_questions(questionnaire: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The questions of the split: every non-excluded Q1/Q2/Q3 entry."""
    return [entry for entry in questionnaire if not entry["excluded"] and entry["group"] in ("Q1", "Q2", "Q3")]


def question_column(entry: dict[str, Any]) -> str:
    return f"Q{int(entry['id'])}"


def read_header(path: Path) -> tuple[str, list[str]]:
    """The separator and the column names, from the first line only: the official CSV has been released with ','
    and ';' separators (build-populations reads gzip-compressed <ISO3>.csv.gz files too)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
        header = handle.readline()
    if not header.strip():
        raise BuildError(f"{path}: empty file, expected a header line")
    try:
        sep = csv.Sniffer().sniff(header, delimiters=",;\t").delimiter
    except csv.Error:
        sep = ","
    return sep, next(csv.reader([header.rstrip("\r\n")], delimiter=sep))


def as_integer_codes(series: pd.Series, path: Path, column: str) -> pd.Series:
    """Answer codes as int64; a non-integer cell is an error, a blank cell becomes MISSING."""
    if pd.api.types.is_integer_dtype(series) and not pd.api.types.is_extension_array_dtype(series):
        return series.astype("int64")
    numeric = pd.to_numeric(series, errors="coerce")
    bad = series.notna() & (numeric.isna() | (numeric % 1 != 0))
    if bad.any():
        index = bad.idxmax()
        raise BuildError(
            f"{path}: data row {index + 1}, column {column}: {series[index]!r} is not an integer answer code"
        )
    return numeric.fillna(MISSING).astype("int64")


def as_finite_numbers(series: pd.Series, path: Path, column: str) -> pd.Series:
    """A numeric column as float64; a blank, non-numeric or infinite cell is an error naming its row."""
    numeric = pd.to_numeric(series, errors="coerce").astype("float64")
    bad = ~np.isfinite(numeric)
    if bad.any():
        index = bad.idxmax()
        raise BuildError(f"{path}: data row {index + 1}, column {column}: {series[index]!r} is not a finite number")
    return numeric


def read_wvs_csv(path: str | Path, columns: list[str], float_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read B_COUNTRY and the given question columns only (the real file is ~1 GB), as integer codes; the
    ``float_columns`` (a survey weight) as finite numbers, a blank or non-numeric cell an error.

    The index is the 0-based data row, so error messages can name row ``index + 1``.
    """
    path = Path(path)
    if not path.is_file():
        raise BuildError(f"{path}: CSV file does not exist")
    sep, header = read_header(path)
    if COUNTRY_COLUMN not in header:
        raise BuildError(f"{path}: no {COUNTRY_COLUMN} column (the official WVS-7 layout has one)")
    missing = [column for column in [*columns, *float_columns] if column not in header]
    if missing:
        raise BuildError(f"{path}: question column(s) {', '.join(missing)} of the questionnaire missing from the CSV")
    frame = pd.read_csv(path, sep=sep, usecols=[COUNTRY_COLUMN, *columns, *float_columns], encoding="utf-8-sig",
                        low_memory=False)
    if frame.empty:
        raise BuildError(f"{path}: a header but no respondent rows; nothing to build")
    numbers = {column: as_finite_numbers(frame[column], path, column) for column in float_columns}
    frame = frame[[COUNTRY_COLUMN, *columns]]
    country = frame[COUNTRY_COLUMN]
    if country.isna().any():
        index = country.isna().idxmax()
        raise BuildError(f"{path}: data row {index + 1}, column {COUNTRY_COLUMN}: blank country code")
    blanks = int(frame[columns].isna().sum().sum())
    if blanks:
        log(f"{path}: {blanks} blank answer cells, treated as missing")
    codes = {column: as_integer_codes(frame[column], path, column) for column in frame.columns}
    return pd.DataFrame({column: series.to_numpy() for column, series in {**codes, **numbers}.items()},
                        index=frame.index)


def check_country_codes(frame: pd.DataFrame, countries: dict[str, dict[str, Any]], skip: dict[int, str],
                        path: str | Path) -> pd.DataFrame:
    """Drop the rows of countries to skip (reported); an unknown code is an error."""
    known = {entry["wvs_code"] for entry in countries.values() if entry.get("wvs_code") is not None}
    codes = frame[COUNTRY_COLUMN]
    unknown = ~codes.isin(known) & ~codes.isin(list(skip))
    if unknown.any():
        index = unknown.idxmax()
        raise BuildError(
            f"{path}: data row {index + 1}: unknown country code {COUNTRY_COLUMN}={codes[index]} "
            f"(not a wvs_code of countries.json, not skipped)"
        )
    skipped = codes.isin(list(skip))
    for code in sorted(set(codes[skipped])):
        log(f"skipping country code {code} ({skip[code]}): {int((codes == code).sum())} respondents, in no group")
    return frame[~skipped]


def check_answer_codes(frame: pd.DataFrame, questions: list[dict[str, Any]], path: str | Path) -> None:
    """Every non-negative code must be one of the question's codes (e.g. no 7 on a 4-point scale)."""
    for entry in questions:
        column = question_column(entry)
        allowed = [int(code) for code in entry["codes"]]
        values = frame[column].to_numpy()
        bad = (values >= 0) & ~np.isin(values, allowed)
        if bad.any():
            position = int(np.argmax(bad))
            raise BuildError(
                f"{path}: data row {frame.index[position] + 1}, column {column}: answer code {values[position]} is "
                f"not a code of question {entry['id']} (codes {sorted(allowed)}; negative codes mean missing)"
            )


def valid_answers(values: np.ndarray) -> np.ndarray:
    """The mask of answers that count: codes 0..10 (negative codes are missing)."""
    return (values >= 0) & (values <= 10)


def distribution(values: np.ndarray, codes: dict[str, str],
                 weights: np.ndarray | None = None) -> tuple[dict[str, float], int] | None:
    """Percentages per option letter and n (valid respondents) from one country's answer codes; None if no valid
    answer. With ``weights`` (one per respondent, positive) the percentages are weighted; n stays a count.

    Letters come in first-occurrence order, then the options nobody chose (0.0) in option order,
    which reproduces the key order of the shared files.
    """
    keep = valid_answers(values)
    valid = values[keep]
    n = int(valid.size)
    if n == 0:
        return None
    unique, first, inverse, counts = np.unique(valid, return_index=True, return_inverse=True, return_counts=True)
    mass = None if weights is None else np.bincount(inverse.ravel(), weights=weights[keep], minlength=unique.size)
    dist: dict[str, float] = {}
    for position in np.argsort(first, kind="stable"):
        share = int(counts[position]) / n if mass is None else float(mass[position]) / float(mass.sum())
        dist[codes[str(int(unique[position]))]] = share * 100
    for letter in codes.values():
        dist.setdefault(letter, 0.0)
    return dist, n


def country_distributions(frame: pd.DataFrame, entry: dict[str, Any]) -> dict[int, tuple[dict[str, float], int]]:
    """WVS country code -> (distribution, n) for one question; countries without valid answers left out."""
    column = question_column(entry)
    result = {}
    for code, values in frame.groupby(COUNTRY_COLUMN, sort=False)[column]:
        built = distribution(values.to_numpy(), entry["codes"])
        if built is not None:
            result[int(code)] = built
    return result


def group_countries(countries: dict[str, dict[str, Any]], group: str) -> list[tuple[str, int]]:
    """(name, wvs_code) of a country group in output order (C1 by code, C2/C3 the paper's order)."""
    members = [(name, entry["wvs_code"]) for name, entry in countries.items()
               if group in entry.get("groups", []) and entry.get("wvs_code") is not None]
    if group == "C1":
        return sorted(members, key=lambda member: member[1])
    order = PAPER_COUNTRY_ORDER.get(group, [])
    rank = {name: position for position, name in enumerate(order)}
    return sorted(members, key=lambda member: rank.get(member[0], len(order)))  # stable: rest in file order


def make_row(entry: dict[str, Any], country: str, dist: dict[str, float], n: int, data_type: str) -> dict[str, Any]:
    return {
        "id": str(entry["id"]),
        "instruction": PAPER_INSTRUCTION.format(country=country),
        "input": entry["input"],
        "options": entry["options"],
        "options_dist": dist,
        "data_type": data_type,
        "n": n,
    }


def build_rows(frame: pd.DataFrame, questionnaire: list[dict[str, Any]],
               countries: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Output file key (train/valid/test) -> rows, with per-part counts printed to stderr."""
    questions = used_questions(questionnaire)
    by_question = {entry["id"]: country_distributions(frame, entry)
                   for entry in tqdm(questions, desc="build_wvs: distributions", unit="question")}
    present = set(int(code) for code in frame[COUNTRY_COLUMN].unique())
    outputs: dict[str, list[dict[str, Any]]] = {key: [] for key in OUTPUT_FILES}
    for data_type, country_group, question_group, file_key in PARTS:
        members = group_countries(countries, country_group)
        part_questions = [entry for entry in questions if entry["group"] == question_group]
        absent = [name for name, code in members if code not in present]
        rows, skipped = [], 0
        for name, code in members:
            if code not in present:
                continue
            for entry in part_questions:
                cell = by_question[entry["id"]].get(code)
                if cell is None:
                    skipped += 1
                    continue
                rows.append(make_row(entry, name, cell[0], cell[1], data_type))
        outputs[file_key].extend(rows)
        log(f"{data_type} ({country_group}x{question_group}): {len(rows)} rows from "
            f"{len(members) - len(absent)} countries x {len(part_questions)} questions; "
            f"{skipped} (country, question) cells skipped (no valid answer)"
            + (f"; absent from the CSV: {', '.join(absent)}" if absent else ""))
    return outputs


def write_sft_files(outputs: dict[str, list[dict[str, Any]]], out_dir: str | Path) -> list[Path]:
    """JSON lists formatted like the shared files (indent 4, UTF-8, no trailing newline)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, filename in OUTPUT_FILES.items():
        path = out_dir / filename
        write_text(path, json.dumps(outputs[key], indent=4, ensure_ascii=False))
        log(f"wrote {path}: {len(outputs[key])} rows")
        written.append(path)
    return written


def build(csv_path: str | Path, questionnaire_path: str | Path, countries_path: str | Path,
          out_dir: str | Path, skip: dict[int, str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Read, check, aggregate and write; returns the rows per output file."""
    skip = DEFAULT_SKIP_COUNTRIES if skip is None else skip
    questionnaire = load_questionnaire(questionnaire_path)
    countries = load_countries(countries_path)
    questions = used_questions(questionnaire)
    frame = read_wvs_csv(csv_path, [question_column(entry) for entry in questions])
    log(f"{csv_path}: {len(frame)} respondents, {len(questions)} questions")
    frame = check_country_codes(frame, countries, skip, csv_path)
    check_answer_codes(frame, questions, csv_path)
    outputs = build_rows(frame, questionnaire, countries)
    empty = [OUTPUT_FILES[key] for key, rows in outputs.items() if not rows]
    if len(empty) == len(outputs):
        raise BuildError(f"{csv_path}: no respondent of the split's countries answered its questions; nothing written")
    if empty:
        log(f"warning: no rows for {', '.join(empty)} (none of those countries or questions in {csv_path})")
    write_sft_files(outputs, out_dir)
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = commandline.parser("build-wvs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", required=True, help="official WVS-7 respondent-level CSV (B_COUNTRY, Q1..Q290)")
    parser.add_argument("--questionnaire", default=None,
                        help="questionnaire_en.json (default: wvs7/questionnaire_en.json of the data root: the copy "
                             "shipped in the package, or $SIMLAB_DATA)")
    parser.add_argument("--countries", help="countries.json (default: the one next to --questionnaire)")
    parser.add_argument("--out", required=True, help="output folder for sft_wvs_{train,valid,test}.json")
    parser.add_argument("--skip-country", type=int, action="append", metavar="CODE",
                        help="B_COUNTRY code whose rows are dropped (repeatable; default: 909 Northern Ireland)")
    args = parser.parse_args(argv)
    questionnaire = args.questionnaire or data_root() / "wvs7" / "questionnaire_en.json"  # read plain or .xz
    countries = args.countries or Path(questionnaire).with_name("countries.json")
    skip = None
    if args.skip_country is not None:
        skip = {code: DEFAULT_SKIP_COUNTRIES.get(code, "given by --skip-country") for code in args.skip_country}
    build(args.csv, questionnaire, countries, args.out, skip)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BuildError as err:
        sys.exit(f"error: {err}")
