"""Do whole-country rows built from respondent files equal today's country rows?

    simlab build-populations --respondents <shared data>/wvs7_respondents --by "" --weights none --out BUILT
    python scripts/compare_country_rows.py BUILT [--reference <data root>]

BUILT holds populations_{train,valid,test}.json (plain or .xz); the reference is wvs7/sft_wvs_{train,valid,test}.json
of a data root (default: the copy shipped in the package). Rows are matched by (file, data_type, country, question
id), over the countries that have built rows (those with respondent files). It prints how many rows were compared,
the largest absolute share difference, whether the option letters, their key order, ``n`` (where the reference has
one) and the row order agree, and which rows are on one side only. Exit status 0 when everything agrees, else 1.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from simlab.data.files import read_data_json
from simlab.data.prompts import ENGLISH_COUNTRY_PATTERN
from simlab.paths import PACKAGED_DATA

PARTS = {"train": ("populations_train.json", "wvs7/sft_wvs_train.json"),
         "valid": ("populations_valid.json", "wvs7/sft_wvs_valid.json"),
         "test": ("populations_test.json", "wvs7/sft_wvs_test.json")}
PATTERN = re.compile(ENGLISH_COUNTRY_PATTERN)


def key(part: str, row: dict[str, Any]) -> tuple[str, str, str, str]:
    match = PATTERN.match(row["instruction"])
    if match is None or row.get("population", {}).get("country", match["country"]) != match["country"]:
        raise ValueError(f"{part}: row id {row['id']} has no whole-country instruction: {row['instruction']!r}")
    if len(row.get("population", {})) > 1:
        raise ValueError(f"{part}: row id {row['id']} is a subgroup ({row['population']}); build with --by \"\"")
    return part, row["data_type"], match["country"], str(row["id"])


def compare(built_dir: Path, reference_root: Path) -> dict[str, Any]:
    """The comparison's numbers (see the module docstring)."""
    built, reference, built_order, reference_order = {}, {}, [], []
    for part, (built_name, reference_name) in PARTS.items():
        for row in read_data_json(built_name, built_dir):
            built[key(part, row)] = row
            built_order.append(key(part, row))
        for row in read_data_json(reference_name, reference_root):
            reference_order.append(key(part, row))
            reference[reference_order[-1]] = row
    countries = {country for _, _, country, _ in built}
    reference = {k: row for k, row in reference.items() if k[2] in countries}
    common = [k for k in built_order if k in reference]
    result: dict[str, Any] = {
        "countries": len(countries), "rows_compared": len(common),
        "only_built": sorted(set(built) - set(reference)), "only_reference": sorted(set(reference) - set(built)),
        "max_abs_share_difference": 0.0, "letters_differ": 0, "key_order_differs": 0, "other_fields_differ": 0,
        "n_compared": 0, "n_equal": 0, "reference_without_n": 0,
        "same_row_order": common == [k for k in reference_order if k in built]}
    for k in common:
        mine, theirs = built[k], reference[k]
        a, b = mine["options_dist"], theirs["options_dist"]
        if set(a) != set(b):
            result["letters_differ"] += 1
            continue
        result["max_abs_share_difference"] = max(result["max_abs_share_difference"],
                                                 max(abs(a[letter] - b[letter]) for letter in a))
        result["key_order_differs"] += list(a) != list(b)
        fields = ("id", "instruction", "input", "options", "data_type")
        result["other_fields_differ"] += any(mine[field] != theirs[field] for field in fields)
        if theirs.get("n") is None:
            result["reference_without_n"] += 1
        else:
            result["n_compared"] += 1
            result["n_equal"] += mine.get("n") == theirs["n"]
    return result


def agrees(result: dict[str, Any]) -> bool:
    return (result["rows_compared"] > 0 and not result["only_built"] and not result["only_reference"]
            and result["max_abs_share_difference"] == 0.0 and result["same_row_order"]
            and result["n_equal"] == result["n_compared"]
            and not (result["letters_differ"] or result["key_order_differs"] or result["other_fields_differ"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("built", type=Path, help="folder with populations_{train,valid,test}.json (--by \"\")")
    parser.add_argument("--reference", type=Path, default=PACKAGED_DATA, help="data root with wvs7/sft_wvs_*.json")
    args = parser.parse_args(argv)
    result = compare(args.built, args.reference)
    for name, value in result.items():
        shown = f"{len(value)} {value[:5]}{' ...' if len(value) > 5 else ''}" if isinstance(value, list) else value
        print(f"{name}: {shown}")
    print("agree" if agrees(result) else "DIFFER")
    return 0 if agrees(result) else 1


if __name__ == "__main__":
    sys.exit(main())
