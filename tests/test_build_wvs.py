"""Tests of the WVS-7 builder on small made-up CSVs in the official column layout.

The WVS licence forbids redistributing respondent-level data, so every CSV here is invented;
the expected percentages below are worked out by hand from the CSV rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA, read_data_json

from simlab.data.build_wvs import BuildError, build, main

SHARED = SHARED_DATA  # $SIMLAB_DATA, else the copy shipped in the package (conftest)

OPTIONS_4 = ["(A)Very", "(B)Rather", "(C)Not very", "(D)Not at all"]
CODES_4 = {"1": "A", "2": "B", "3": "C", "4": "D"}


def question(qid, group, options, codes, excluded=False):
    return {
        "id": str(qid),
        "group": group,
        "excluded": excluded,
        "dimension": "made up",
        "input": None if excluded else f"Question {qid}? \nHere are the options: \n",
        "options": options,
        "codes": codes,
        "input_source": None if excluded else "made up",
    }


QUESTIONNAIRE = [
    question(1, "Q1", OPTIONS_4, CODES_4),
    question(2, "Q1", OPTIONS_4, CODES_4, excluded=True),  # excluded: never read, never checked
    question(3, "Q1", ["(X)Hard to say", "(A)Yes", "(B)No"], {"0": "X", "1": "A", "2": "B"}),
    question(164, "Q2", ["(A)One", "(B)Two", "(C)Three"], {"1": "A", "2": "B", "3": "C"}),
    question(199, "Q3", ["(A)Yes", "(B)No"], {"1": "A", "2": "B"}),
]


def country(code, groups):
    return {"wvs_code": code, "iso3": "XXX", "groups": groups, "raw_available": True, "pew_names": []}


# Listing order matters for C2/C3 (names not in the paper's lists keep this order); C1 goes by code.
COUNTRIES = {
    "Alpha": country(10, ["C1"]),
    "Zeta": country(50, ["C1"]),  # no respondents in the CSV
    "Epsilon": country(40, ["C3"]),
    "Gamma": country(20, ["C2"]),
    "Delta": country(30, ["C2", "C3", "pew_c3"]),
    "Beta": country(5, ["C1", "pew_c1"]),
}

HEADER = ["A_WAVE", "B_COUNTRY", "Q1", "Q2", "Q3", "Q164", "Q199", "Q260"]
# Rows interleave countries on purpose; 909 (Northern Ireland) is in the real file and skipped.
RESPONDENTS = [
    # A_WAVE, B_COUNTRY, Q1, Q2, Q3, Q164, Q199, Q260
    (7, 10, 4, 7, 1, 2, 1, 1),  # Alpha
    (7, 5, 1, 7, 0, 3, -4, 2),  # Beta
    (7, 5, 2, 7, 2, 3, -4, 1),  # Beta
    (7, 10, 4, 7, -5, 2, 2, 2),  # Alpha
    (7, 909, 3, 7, 1, 1, 1, 1),  # Northern Ireland
    (7, 5, 2, 7, 0, -1, -4, 1),  # Beta
    (7, 5, -2, 7, -1, 1, -4, 2),  # Beta
    (7, 10, 3, 7, 1, 2, -1, 1),  # Alpha
    (7, 5, 1, 7, 0, 3, -4, 1),  # Beta
    (7, 20, 3, 7, -1, 1, 2, 1),  # Gamma
    (7, 20, -1, 7, -1, 2, 2, 2),  # Gamma
    (7, 30, 1, 7, 0, -2, 1, 1),  # Delta
    (7, 30, 1, 7, 1, -2, 2, 2),  # Delta
    (7, 40, 4, 7, 2, 1, 2, 1),  # Epsilon
]


def write_csv(path: Path, header, rows, sep=",") -> Path:
    lines = [sep.join(f'"{name}"' for name in header)]
    lines += [sep.join(str(value) for value in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def inputs(tmp_path):
    """A made-up questionnaire_en.json and countries.json side by side, as in the data root."""
    (tmp_path / "questionnaire_en.json").write_text(json.dumps(QUESTIONNAIRE, indent=4), encoding="utf-8")
    (tmp_path / "countries.json").write_text(json.dumps(COUNTRIES, indent=4), encoding="utf-8")
    return tmp_path


def row(qid, name, dist, data_type, n):
    entry = next(e for e in QUESTIONNAIRE if e["id"] == str(qid))
    return {
        "id": str(qid),
        "instruction": f"How would someone from {name} answer the following question:\n\n",
        "input": entry["input"],
        "options": entry["options"],
        "options_dist": dist,
        "data_type": data_type,
        "n": n,
    }


# Worked out by hand from RESPONDENTS. Keys: first occurrence within the country, then zero-filled.
EXPECTED_TRAIN = [
    # C1 by WVS code: Beta (5) before Alpha (10); Zeta has no respondents.
    row(1, "Beta", {"A": 50.0, "B": 50.0, "C": 0.0, "D": 0.0}, "train", 4),  # 1,2,2,(-2),1
    row(3, "Beta", {"X": 75.0, "B": 25.0, "A": 0.0}, "train", 4),  # 0,2,0,(-1),0: code 0 -> X
    row(1, "Alpha", {"D": 66.66666666666666, "C": 33.33333333333333, "A": 0.0, "B": 0.0}, "train", 3),
    row(3, "Alpha", {"A": 100.0, "X": 0.0, "B": 0.0}, "train", 2),  # 1,(-5),1
]
EXPECTED_VALID = [
    row(164, "Beta", {"C": 75.0, "A": 25.0, "B": 0.0}, "valid", 4),  # 3,3,(-1),1,3
    row(164, "Alpha", {"B": 100.0, "A": 0.0, "C": 0.0}, "valid", 3),
]
EXPECTED_TEST = [
    # test_1: Beta never answered Q199 (all -4): skipped.
    row(199, "Alpha", {"A": 50.0, "B": 50.0}, "test_1", 2),  # 1,2,(-1)
    # test_2..4: C2 = Gamma, Delta (countries.json order). Gamma Q3 and Delta Q164 skipped.
    row(1, "Gamma", {"C": 100.0, "A": 0.0, "B": 0.0, "D": 0.0}, "test_2", 1),
    row(1, "Delta", {"A": 100.0, "B": 0.0, "C": 0.0, "D": 0.0}, "test_2", 2),
    row(3, "Delta", {"X": 50.0, "A": 50.0, "B": 0.0}, "test_2", 2),
    row(164, "Gamma", {"A": 50.0, "B": 50.0, "C": 0.0}, "test_3", 2),
    row(199, "Gamma", {"B": 100.0, "A": 0.0}, "test_4", 2),
    row(199, "Delta", {"A": 50.0, "B": 50.0}, "test_4", 2),
    # test_5..7: C3 = Epsilon, Delta (countries.json order; Delta is in C2 and C3).
    row(1, "Epsilon", {"D": 100.0, "A": 0.0, "B": 0.0, "C": 0.0}, "test_5", 1),
    row(3, "Epsilon", {"B": 100.0, "X": 0.0, "A": 0.0}, "test_5", 1),
    row(1, "Delta", {"A": 100.0, "B": 0.0, "C": 0.0, "D": 0.0}, "test_5", 2),
    row(3, "Delta", {"X": 50.0, "A": 50.0, "B": 0.0}, "test_5", 2),
    row(164, "Epsilon", {"A": 100.0, "B": 0.0, "C": 0.0}, "test_6", 1),
    row(199, "Epsilon", {"B": 100.0, "A": 0.0}, "test_7", 1),
    row(199, "Delta", {"A": 50.0, "B": 50.0}, "test_7", 2),
]


def read_out(out: Path, name: str):
    return json.loads((out / f"sft_wvs_{name}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("sep", [",", ";"])
def test_made_up_csv_gives_hand_computed_rows(inputs, tmp_path, capsys, sep):
    csv_path = write_csv(tmp_path / "wvs.csv", HEADER, RESPONDENTS, sep=sep)
    out = tmp_path / "out"
    assert main(["--csv", str(csv_path), "--questionnaire", str(inputs / "questionnaire_en.json"),
                 "--out", str(out)]) == 0  # --countries defaults to the file next to the questionnaire

    for name, expected in (("train", EXPECTED_TRAIN), ("valid", EXPECTED_VALID), ("test", EXPECTED_TEST)):
        rows = read_out(out, name)
        assert rows == expected, name
        # key order inside options_dist is part of the format of the shared files
        assert [list(r["options_dist"]) for r in rows] == [list(r["options_dist"]) for r in expected]
        text = (out / f"sft_wvs_{name}.json").read_text(encoding="utf-8")
        assert text == json.dumps(expected, indent=4, ensure_ascii=False)

    err = capsys.readouterr().err
    assert "train (C1xQ1): 4 rows" in err and "absent from the CSV: Zeta" in err
    assert "test_1 (C1xQ3): 1 rows" in err and "1 (country, question) cells skipped" in err
    assert "test_6 (C3xQ2): 1 rows from 2 countries x 1 questions; 1 (country, question) cells skipped" in err
    assert "skipping country code 909 (Northern Ireland): 1 respondents" in err


def test_data_type_follows_country_and_question_group(inputs, tmp_path):
    csv_path = write_csv(tmp_path / "wvs.csv", HEADER, RESPONDENTS)
    outputs = build(csv_path, inputs / "questionnaire_en.json", inputs / "countries.json", tmp_path / "out")
    parts = {"train": ("C1", "Q1"), "valid": ("C1", "Q2"), "test_1": ("C1", "Q3"),
             "test_2": ("C2", "Q1"), "test_3": ("C2", "Q2"), "test_4": ("C2", "Q3"),
             "test_5": ("C3", "Q1"), "test_6": ("C3", "Q2"), "test_7": ("C3", "Q3")}
    groups = {e["id"]: e["group"] for e in QUESTIONNAIRE}
    for rows in outputs.values():
        for r in rows:
            name = r["instruction"].split("someone from ")[1].split(" answer")[0]
            country_group, question_group = parts[r["data_type"]]
            assert country_group in COUNTRIES[name]["groups"]
            assert groups[r["id"]] == question_group
    assert "2" not in {r["id"] for rows in outputs.values() for r in rows}  # excluded question


def test_question_not_asked_in_a_country_is_skipped(inputs, tmp_path):
    csv_path = write_csv(tmp_path / "wvs.csv", HEADER, RESPONDENTS)
    outputs = build(csv_path, inputs / "questionnaire_en.json", inputs / "countries.json", tmp_path / "out")
    cells = {(r["instruction"], r["id"]) for rows in outputs.values() for r in rows}
    instruction = "How would someone from {} answer the following question:\n\n".format
    assert (instruction("Beta"), "199") not in cells  # all -4
    assert (instruction("Gamma"), "3") not in cells  # all -1
    assert (instruction("Delta"), "164") not in cells  # all -2
    assert (instruction("Alpha"), "199") in cells


def run_build(inputs, csv_path):
    return build(csv_path, inputs / "questionnaire_en.json", inputs / "countries.json", inputs / "out")


def test_csv_without_country_column_is_an_error(inputs, tmp_path):
    csv_path = write_csv(tmp_path / "no_country.csv", ["A_WAVE", "Q1", "Q3", "Q164", "Q199"], [(7, 1, 1, 1, 1)])
    with pytest.raises(BuildError, match=r"no_country\.csv: no B_COUNTRY column"):
        run_build(inputs, csv_path)


def test_unknown_country_code_is_an_error(inputs, tmp_path):
    rows = [(7, 10, 1, 1, 1, 1, 1, 1), (7, 5, 1, 1, 1, 1, 1, 1), (7, 999, 1, 1, 1, 1, 1, 1)]
    csv_path = write_csv(tmp_path / "unknown.csv", HEADER, rows)
    with pytest.raises(BuildError, match=r"unknown\.csv: data row 3: unknown country code B_COUNTRY=999"):
        run_build(inputs, csv_path)


def test_code_outside_the_question_codes_is_an_error(inputs, tmp_path):
    rows = [(7, 10, 1, 1, 1, 1, 1, 1), (7, 10, 7, 1, 1, 1, 1, 1)]  # 7 on a 4-option question
    csv_path = write_csv(tmp_path / "bad_code.csv", HEADER, rows)
    with pytest.raises(BuildError, match=r"bad_code\.csv: data row 2, column Q1: answer code 7"):
        run_build(inputs, csv_path)
    rows = [(7, 10, 1, 1, 1, 1, 1, 1), (7, 10, 1, 1, 3, 1, 11, 1)]  # 3 on X/A/B (codes 0..2)
    csv_path = write_csv(tmp_path / "bad_code_x.csv", HEADER, rows)
    with pytest.raises(BuildError, match=r"bad_code_x\.csv: data row 2, column Q3: answer code 3"):
        run_build(inputs, csv_path)


def test_missing_question_column_is_an_error(inputs, tmp_path):
    header = [name for name in HEADER if name != "Q164"]
    rows = [tuple(v for name, v in zip(HEADER, r) if name != "Q164") for r in RESPONDENTS]
    csv_path = write_csv(tmp_path / "short.csv", header, rows)
    with pytest.raises(BuildError, match=r"short\.csv: question column\(s\) Q164 .*missing"):
        run_build(inputs, csv_path)


def test_non_integer_code_is_an_error(inputs, tmp_path):
    rows = [(7, 10, 1, 1, 1, 1, 1, 1), (7, 10, 1, 1, 1, "x", 1, 1)]
    csv_path = write_csv(tmp_path / "text.csv", HEADER, rows)
    with pytest.raises(BuildError, match=r"text\.csv: data row 2, column Q164: 'x' is not an integer"):
        run_build(inputs, csv_path)


def test_rebuild_reproduces_shared_rows_with_real_questionnaire(tmp_path):
    """Respondents made up to match shared rows rebuild to byte-identical rows (C2/C3 in paper order)."""
    wvs7 = SHARED / "wvs7"  # the builder reads the questionnaire and countries plain or .xz, as the loader does
    questionnaire = read_data_json("wvs7/questionnaire_en.json")
    countries = read_data_json("wvs7/countries.json")
    shared_test = read_data_json("wvs7/sft_wvs_test.json")
    names = {"Nigeria", "Morocco"}  # both in C2 and C3; the paper lists them in opposite orders there
    expected = [r for r in shared_test if r["instruction"].split("from ")[1].split(" answer")[0] in names]

    letter_to_code = {e["id"]: {letter: int(code) for code, letter in e["codes"].items()} for e in questionnaire}
    columns = [f"Q{e['id']}" for e in questionnaire if not e["excluded"]]
    answers: dict[str, dict[str, list[int]]] = {name: {} for name in names}
    for r in expected:
        name = r["instruction"].split("from ")[1].split(" answer")[0]
        codes = []
        for letter, percent in r["options_dist"].items():  # key order = first occurrence
            codes += [letter_to_code[r["id"]][letter]] * round(percent * r["n"] / 100)
        assert len(codes) == r["n"]
        answers[name].setdefault(f"Q{r['id']}", codes)  # Q1 rows appear twice (test_2 and test_5)
    rows = []
    for name in sorted(names):
        size = max(len(codes) for codes in answers[name].values())
        for i in range(size):
            column_values = [answers[name].get(c, [])[i] if i < len(answers[name].get(c, [])) else -4
                             for c in columns]
            rows.append((countries[name]["wvs_code"], *column_values))
    csv_path = write_csv(tmp_path / "made_up.csv", ["B_COUNTRY", *columns], rows)

    outputs = build(csv_path, wvs7 / "questionnaire_en.json", wvs7 / "countries.json", tmp_path / "out")
    assert outputs["train"] == [] and outputs["valid"] == []
    assert json.dumps(outputs["test"], indent=4, ensure_ascii=False) == json.dumps(expected, indent=4,
                                                                                    ensure_ascii=False)


def test_a_header_only_csv_is_an_error_and_writes_nothing(inputs, tmp_path):
    csv_path = write_csv(tmp_path / "header.csv", HEADER, [])
    with pytest.raises(BuildError, match=r"header\.csv: a header but no respondent rows"):
        run_build(inputs, csv_path)
    assert not (inputs / "out").exists()


def test_a_questionnaire_that_is_not_json_or_lacks_countries_is_an_error(inputs, tmp_path):
    csv_path = write_csv(tmp_path / "ok.csv", HEADER, RESPONDENTS)
    (inputs / "questionnaire_en.json").write_text("not json", encoding="utf-8")
    with pytest.raises(BuildError, match=r"questionnaire_en\.json: questionnaire file is not JSON \(line 1"):
        run_build(inputs, csv_path)
    (inputs / "questionnaire_en.json").write_text(json.dumps(QUESTIONNAIRE), encoding="utf-8")
    (inputs / "countries.json").unlink()
    with pytest.raises(BuildError, match=r"countries\.json: countries \(--countries, default: countries.json beside "
                                         r"--questionnaire\) file does not exist"):
        run_build(inputs, csv_path)
    from simlab.data.build_wvs import main

    with pytest.raises(BuildError):  # the CLI turns it into `error: ...` and exit code 1 (see __main__)
        main(["--csv", str(csv_path), "--questionnaire", str(inputs / "questionnaire_en.json"),
              "--out", str(tmp_path / "o")])
