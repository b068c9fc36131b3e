"""Checks across a data config's rows (simlab.data.checks): unknown countries, one question worded two ways, empty
question texts; and numbers, limits and files that used to reach a library's raw error. File-level, no model."""

import json
import re

import pytest
from conftest import paper_row, read_data_json, write_rows

from simlab.data import RowError, SurveyDataModule
from simlab.data.rows import read_rows

COUNTRIES = {"Andorra": {"pew_names": ["Andorra"]}, "Czechia": {"pew_names": ["Czech Rep.", "Czechia"]},
             "Chile": {"pew_names": ["Chile"]}}


def instruction(country: str) -> str:
    return f"How would someone from {country} answer the following question:\n\n"


def data_root(tmp_path, rows, countries=COUNTRIES):
    """A data root holding valid.json (and wvs7/countries.json unless ``countries`` is None)."""
    if countries is not None:
        (tmp_path / "wvs7").mkdir()
        (tmp_path / "wvs7" / "countries.json").write_text(json.dumps(countries), encoding="utf-8")
    write_rows(tmp_path / "valid.json", rows)
    return tmp_path


def load(root, **settings) -> SurveyDataModule:
    datamodule = SurveyDataModule(tokenizer=None, files=["valid.json"], root=str(root),
                                  subset_names={"valid": "C1-Q2"}, train_subset=None, valid_subset=None,
                                  test_subsets=["C1-Q2"], invalid_rows_file=None, **settings)
    datamodule.load_rows()
    return datamodule


def test_a_misspelt_country_is_refused_with_the_closest_known_name(tmp_path):
    root = data_root(tmp_path, [paper_row(), paper_row(instruction=instruction("Andora"))])
    with pytest.raises(RowError, match=r"valid.json: row 1: field 'instruction': unknown country 'Andora' \(not in "
                                       r".*countries.json\); did you mean 'Andorra'\?; fix the name, or set "
                                       r"data.unknown_countries=warn"):
        load(root)


def test_an_unknown_country_with_no_close_name_is_refused_too(tmp_path):
    root = data_root(tmp_path, [paper_row(instruction=instruction("Atlantis"))])
    with pytest.raises(RowError, match=r"row 0: field 'instruction': unknown country 'Atlantis'") as err:
        load(root)
    assert "did you mean" not in str(err.value)


def test_pew_names_of_the_countries_list_are_known(tmp_path):
    root = data_root(tmp_path, [paper_row(instruction=instruction("Czech Rep.")), paper_row(id="2")])
    assert [r.country for r in load(root).rows["C1-Q2"]] == ["Czech Rep.", "Andorra"]


def test_unknown_countries_can_be_kept_as_a_recorded_warning_or_dropped(tmp_path):
    andora = instruction("Andora")
    rows = [paper_row(), paper_row(instruction=andora), paper_row(id="9", instruction=andora)]
    root = data_root(tmp_path, rows)
    kept = load(root, unknown_countries="warn")
    assert len(kept.rows["C1-Q2"]) == 3
    assert len(kept.data_warnings) == 1
    assert re.search(r"2 row\(s\) name the unknown country 'Andora' \(first: valid.json: row 1\).*did you mean "
                     r"'Andorra'\?; kept \(data.unknown_countries=warn\)", kept.data_warnings[0])
    dropped = load(root, drop_invalid=True)
    assert [r.index for r in dropped.rows["C1-Q2"]] == [0]
    assert [(r["index"], r["id"]) for r in dropped.invalid_rows] == [(1, "164"), (2, "9")]
    with pytest.raises(ValueError, match=r"data.unknown_countries must be one of \['error', 'warn'\], got 'maybe'"):
        load(root, unknown_countries="maybe")


def test_without_a_countries_list_names_go_unchecked_and_say_so(tmp_path):
    root = data_root(tmp_path, [paper_row(instruction=instruction("Atlantis"))], countries=None)
    datamodule = load(root)
    assert datamodule.rows["C1-Q2"][0].country == "Atlantis"
    assert datamodule.data_warnings == [f"country names not checked: {root} has no wvs7/countries.json "
                                        f"(data.countries names a list)"]
    with pytest.raises(FileNotFoundError, match=r"data.countries=mine.json: no such file under"):
        load(root, countries="mine.json")
    (root / "mine.json").write_text(json.dumps({"Atlantis": {}}), encoding="utf-8")
    assert load(root, countries="mine.json").data_warnings == []


def test_one_question_worded_two_ways_is_refused_naming_both_rows(tmp_path):
    chile = instruction("Chile")
    reworded = paper_row(instruction=chile, input="How important is God in your life?? \nHere are the options: \n")
    root = data_root(tmp_path, [paper_row(), reworded])
    with pytest.raises(RowError, match=r"valid.json: row 1: field 'input': question 164 \(survey wvs7\) is worded "
                                       r"differently from .*valid.json: row 0: .*your life\? .* vs .*your life\?\? "):
        load(root)
    other_options = paper_row(instruction=chile, options=["(A)Not at all important", "(B)2", "(C)Very important!"])
    (tmp_path / "b").mkdir()
    root = data_root(tmp_path / "b", [paper_row(), other_options])
    with pytest.raises(RowError, match=r"row 1: field 'options': question 164 .*: option 2 '\(C\)Very important' vs "
                                       r"'\(C\)Very important!'"):
        load(root)


def test_an_empty_question_text_is_refused_and_one_with_only_the_options_intro_recorded(tmp_path):
    root = data_root(tmp_path, [paper_row(input="  \n")])
    with pytest.raises(RowError, match=r"row 0: field 'input': is empty: the row asks no question"):
        load(root)
    (tmp_path / "b").mkdir()
    root = data_root(tmp_path / "b", [paper_row(input=" \nHere are the options: \n")])
    assert load(root).data_warnings == ["question 164 (survey wvs7) has no text besides the options intro in 1 row(s) "
                                        "(first: valid.json: row 0): the model sees only its options"]


@pytest.mark.parametrize("text, message", [
    ('{"A": 1' + "0" * 400 + ', "B": 30, "C": 20}', r"share of A is an integer too large to be a share"),
    ('{"A": 1e401, "B": 30, "C": 20}', r"share of A is inf"),
    ('{"A": 1e308, "B": 1e308, "C": 1e308}', r"shares sum to more than a float holds"),
])
def test_shares_beyond_a_float_are_refused_naming_the_row(tmp_path, text, message):
    path = tmp_path / "rows.json"
    path.write_text("[" + json.dumps(paper_row()).replace('{"B": 30.0, "A": 50.0, "C": 20.0}', text) + "]")
    with pytest.raises(RowError, match=rf"rows.json: row 0: field 'options_dist': {message}"):
        read_rows(path, subset_names={"valid": "C1-Q2"}, renormalize=True)


def test_huge_counts_and_unreadable_numbers_name_the_file(tmp_path):
    path = write_rows(tmp_path / "rows.json", [paper_row(n=10**400)])
    with pytest.raises(RowError, match=r"row 0: field 'n': is an integer too large to be a count of respondents"):
        read_rows(path, subset_names={"valid": "C1-Q2"})
    path = write_rows(tmp_path / "rows.json", [paper_row(n_eff=10**400)])  # a population row's effective size
    with pytest.raises(RowError, match=r"row 0: field 'n_eff': is an integer too large to be an effective sample"):
        read_rows(path, subset_names={"valid": "C1-Q2"})
    path = write_rows(tmp_path / "rows.json", [paper_row(country_shares={"A": 10**400, "B": 30, "C": 20})])
    with pytest.raises(RowError, match=r"row 0: field 'country_shares': share of A is an integer too large"):
        read_rows(path, subset_names={"valid": "C1-Q2"})
    path.write_text("[" + json.dumps(paper_row()).replace('"n"', '"x"').replace("30.0", "3" * 5000) + "]")
    with pytest.raises(RowError, match=r"rows.json: unreadable JSON: Exceeds the limit \(4300 digits\)"):
        read_rows(path, subset_names={"valid": "C1-Q2"})


@pytest.mark.parametrize("setting", ["limit_per_subset", "limit_eval_per_subset"])
@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_row_limits_are_positive_integers_or_null(setting, value):
    with pytest.raises(ValueError, match=rf"data.{setting} must be a positive integer or null \(every row\), got "
                                         rf"{value}"):
        SurveyDataModule(tokenizer=None, files=[], subset_names={}, train_subset=None, valid_subset=None,
                         test_subsets=[], **{setting: value})


@pytest.mark.parametrize("config, subsets", [
    ("wvs_en", {"C1-Q1": 6841, "C1-Q2": 1586, "C1-Q3": 2256, "C2-Q1": 1179, "C2-Q2": 271, "C2-Q3": 471,
                "C3-Q1": 1644, "C3-Q2": 385, "C3-Q3": 660}),
    ("wvs_zh", {"C1-Q2": 1586}),
    ("pew", {"pew_c1": 444, "pew_c3": 264}),
    ("wvs_populations", {"C1-Q1": 33591, "C1-Q2": 7764, "C1-Q3": 13334, "C2-Q1": 6451, "C2-Q2": 1486,
                         "C2-Q3": 2585, "C3-Q1": 9404, "C3-Q2": 2205, "C3-Q3": 3780}),
])
def test_every_row_of_the_shipped_data_passes_the_checks(shared_data, config, subsets):
    """All rows of wvs7/, wvs7_zh/, pew/ and wvs7_populations/ load, every country is in countries.json (Pew's by
    its pew_names), no question is worded two ways; the one warning is WVS question 144, whose text is only the
    options intro."""
    from simlab.tasks.api import composed

    with composed([f"data={config}", f"data.root={shared_data}", "data.invalid_rows_file=null"]) as cfg:
        settings = {k: v for k, v in dict(cfg.data).items() if k != "_target_"}
    settings.update(tokenizer=None, train_subset=None, valid_subset=None, prior_subset=None,
                    test_subsets=list(subsets), limit_per_subset=None, limit_eval_per_subset=None)
    datamodule = SurveyDataModule(**settings)
    datamodule.load_rows()
    assert {s: len(r) for s, r in datamodule.rows.items()} == subsets
    assert datamodule.invalid_rows == []
    bare = {"wvs_en": (64, "wvs7/sft_wvs_train.json"),  # (rows, first file) of question 144
            "wvs_populations": (333, "wvs7_populations/populations_train.json")}
    assert datamodule.data_warnings == ([f"question 144 (survey wvs7) has no text besides the options intro in "
                                         f"{bare[config][0]} row(s) (first: {bare[config][1]}: row 129): the model "
                                         f"sees only its options"] if config in bare else [])
    known = read_data_json("wvs7/countries.json")
    names = set(known) | {n for entry in known.values() for n in entry["pew_names"]}
    assert {r.country for rows in datamodule.rows.values() for r in rows} <= names


def test_the_whole_pew_file_loads_with_its_unknown_countries_recorded(shared_data):
    """global_pew_test.json (in no config) names 48 countries outside countries.json: their rows are errors by
    default (dropped here, with data.drop_invalid), kept and recorded (one warning per name) with
    data.unknown_countries=warn."""
    settings = dict(tokenizer=None, files=["pew/global_pew_test.json"], root=str(shared_data), survey="pew",
                    subset_names={"test": "global"}, train_subset=None, valid_subset=None, test_subsets=["global"],
                    drop_invalid=True, invalid_rows_file=None)
    dropped = SurveyDataModule(**settings)
    dropped.load_rows()
    unknown = [r for r in dropped.invalid_rows if "field 'instruction': unknown country" in r["error"]]
    assert len(unknown) > 0 and len(dropped.invalid_rows) == 9 + len(unknown)
    datamodule = SurveyDataModule(**settings, unknown_countries="warn")
    datamodule.load_rows()
    assert len(datamodule.rows["global"]) == 3991 - 9 and len(datamodule.invalid_rows) == 9
    unknown = [w for w in datamodule.data_warnings if "unknown country" in w]
    assert len(unknown) == 48 and any("'S. Africa'" in w for w in unknown)
