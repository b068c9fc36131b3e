"""Survey rows: a valid row parses into option order; every bad input raises a located RowError."""

from __future__ import annotations

import json
import math
import re

import pytest
from conftest import paper_row, write_rows

from simlab.data.rows import ENGLISH_COUNTRY_PATTERN, RowError, SurveyRow, parse_row, read_rows

SUBSETS = {"valid": "wvs_valid", "train": "wvs_train"}


def _read(path, **kwargs):
    return read_rows(path, subset_names=SUBSETS, **kwargs)


def _parse(raw, path="rows.json", index=0):
    return parse_row(raw, path=path, index=index, subset_names=SUBSETS,
                     country_pattern=re.compile(ENGLISH_COUNTRY_PATTERN))


# ---------------------------------------------------------------------------------------------- valid rows


def test_valid_row_parses(tmp_path):
    path = write_rows(tmp_path / "rows.json", [paper_row(n=812)])
    loaded = _read(path)
    assert loaded.invalid == []
    assert len(loaded.rows) == 1
    row = loaded.rows[0]
    assert isinstance(row, SurveyRow)
    assert row.country == "Andorra"
    assert row.subset == "wvs_valid"
    assert row.question_id == "164"
    assert row.letters == ("A", "B", "C")
    assert row.options == ("(A)Not at all important", "(B)2", "(C)Very important")
    assert row.labels == ("Not at all important", "2", "Very important")
    # options_dist key order is B, A, C: the target must follow the option order A, B, C
    assert row.target == pytest.approx((0.5, 0.3, 0.2), abs=1e-12)
    assert math.isclose(sum(row.target), 1.0, abs_tol=1e-12)
    assert row.n == 812
    assert row.instruction == "How would someone from Andorra answer the following question:\n\n"
    assert row.question == "How important is God in your life? \nHere are the options: \n"
    assert row.source == str(path)
    assert row.index == 0


def test_target_follows_option_order_not_key_order():
    options = ["(A)a", "(B)b", "(C)c", "(D)d"]
    row = _parse(paper_row(options=options, options_dist={"D": 40.0, "C": 30.0, "A": 10.0, "B": 20.0}))
    assert row.target == pytest.approx((0.1, 0.2, 0.3, 0.4), abs=1e-12)
    # an X option (code 0) first, as in the WVS files, keeps its place too
    row = _parse(paper_row(options=["(X)Hard to say", "(A)Yes", "(B)No"], options_dist={"A": 60, "B": 30, "X": 10}))
    assert row.letters == ("X", "A", "B")
    assert row.target == pytest.approx((0.1, 0.6, 0.3), abs=1e-12)


def test_percent_and_proportion_give_same_target():
    percent = _parse(paper_row(options_dist={"B": 30.0, "A": 50.0, "C": 20.0}))
    proportion = _parse(paper_row(options_dist={"B": 0.3, "A": 0.5, "C": 0.2}))
    assert percent.target == pytest.approx(proportion.target, abs=1e-12)
    # rounded percents that do not sum to exactly 100 are normalised
    rounded = _parse(paper_row(options_dist={"A": 50.01, "B": 30.0, "C": 20.0}))
    assert sum(rounded.target) == pytest.approx(1.0, abs=1e-12)
    assert rounded.target[0] == pytest.approx(50.01 / 100.01, abs=1e-12)


def test_integer_shares_and_zero_share_are_fine():
    row = _parse(paper_row(options_dist={"A": 75, "B": 0, "C": 25}))
    assert row.target == pytest.approx((0.75, 0.0, 0.25), abs=1e-12)


@pytest.mark.parametrize("dist, total", [({"A": 25.0, "B": 15.0, "C": 10.0}, "50"),
                                         ({"A": 0.6, "B": 0.3, "C": 0.17}, "1.07"),
                                         ({"A": 3, "B": 0, "C": 1}, "4")])
def test_shares_that_sum_to_neither_100_nor_1_are_an_error(dist, total):
    with pytest.raises(RowError, match=rf"row 0: field 'options_dist': shares sum to {total}, neither 100"):
        _parse(paper_row(options_dist=dist))
    rescaled = parse_row(paper_row(options_dist=dist), path="rows.json", index=0, subset_names={"valid": "C1-Q2"},
                         country_pattern=re.compile(ENGLISH_COUNTRY_PATTERN), renormalize=True)
    assert sum(rescaled.target) == pytest.approx(1.0)


def test_rounded_published_shares_are_accepted():
    assert sum(_parse(paper_row(options_dist={"A": 33.33, "B": 33.33, "C": 33.33})).target) == pytest.approx(1.0)
    assert sum(_parse(paper_row(options_dist={"A": 0.334, "B": 0.333, "C": 0.337})).target) == pytest.approx(1.0)


def test_more_than_26_options_is_an_error():
    options = [f"({chr(65 + i)})o{i}" for i in range(26)] + ["(A)again"]
    with pytest.raises(RowError, match="field 'options': at most 26 options"):
        _parse(paper_row(options=options, options_dist={}))


def test_a_file_that_is_not_utf8_names_the_file_and_line(tmp_path):
    path = tmp_path / "rows.json"
    path.write_bytes(b'[\n{"id": "1",\n "input": "caf\xe9"}]')
    with pytest.raises(RowError, match=r"rows.json: not UTF-8: byte 0xe9 on line 3"):
        read_rows(path, subset_names={"valid": "C1-Q2"})


def test_integer_id_becomes_str_and_n_optional():
    row = _parse(paper_row(id=1229))
    assert row.question_id == "1229"
    assert isinstance(row.question_id, str)
    assert row.n is None  # no n field
    assert _parse(paper_row(n=None)).n is None


def test_subset_name_comes_from_subset_names():
    assert _parse(paper_row(data_type="train")).subset == "wvs_train"
    assert _parse(paper_row(data_type="valid")).subset == "wvs_valid"


def test_country_with_spaces_and_parentheses():
    instruction = "How would someone from India (Current national sample) answer the following question:\n\n"
    assert _parse(paper_row(instruction=instruction)).country == "India (Current national sample)"


# ---------------------------------------------------------------------------------------------- bad rows


def _assert_located(err: RowError, path, index, field_name):
    text = str(err)
    assert str(path) in text
    assert f"row {index}" in text
    assert f"'{field_name}'" in text
    assert err.path == str(path)
    assert err.index == index
    assert err.field_name == field_name


BAD_ROWS = {
    "missing id": ("id", lambda: {k: v for k, v in paper_row().items() if k != "id"}),
    "missing instruction": ("instruction", lambda: {k: v for k, v in paper_row().items() if k != "instruction"}),
    "missing input": ("input", lambda: {k: v for k, v in paper_row().items() if k != "input"}),
    "missing options": ("options", lambda: {k: v for k, v in paper_row().items() if k != "options"}),
    "missing options_dist": ("options_dist", lambda: {k: v for k, v in paper_row().items() if k != "options_dist"}),
    "missing data_type": ("data_type", lambda: {k: v for k, v in paper_row().items() if k != "data_type"}),
    "option without letter prefix": (
        "options", lambda: paper_row(options=["(A)Not at all important", "B)2", "(C)Very important"])
    ),
    "option with lowercase letter": (
        "options", lambda: paper_row(options=["(A)Not at all important", "(b)2", "(C)Very important"])
    ),
    "repeated letter": (
        "options", lambda: paper_row(options=["(A)Not at all important", "(A)2", "(C)Very important"],
                                     options_dist={"A": 50.0, "C": 20.0})
    ),
    "options_dist missing key": ("options_dist", lambda: paper_row(options_dist={"A": 50.0, "B": 50.0})),
    "options_dist extra key": (
        "options_dist", lambda: paper_row(options_dist={"A": 50.0, "B": 30.0, "C": 10.0, "D": 10.0})
    ),
    "negative share": ("options_dist", lambda: paper_row(options_dist={"A": 60.0, "B": -10.0, "C": 50.0})),
    "nan share": ("options_dist", lambda: paper_row(options_dist={"A": float("nan"), "B": 30.0, "C": 20.0})),
    "inf share": ("options_dist", lambda: paper_row(options_dist={"A": float("inf"), "B": 30.0, "C": 20.0})),
    "all-zero shares": ("options_dist", lambda: paper_row(options_dist={"A": 0.0, "B": 0, "C": 0.0})),
    "string share": ("options_dist", lambda: paper_row(options_dist={"A": "50", "B": 30.0, "C": 20.0})),
    "null share": ("options_dist", lambda: paper_row(options_dist={"A": None, "B": 30.0, "C": 20.0})),
    "bool share": ("options_dist", lambda: paper_row(options_dist={"A": True, "B": 30.0, "C": 20.0})),
    "options_dist not an object": ("options_dist", lambda: paper_row(options_dist=[50.0, 30.0, 20.0])),
    "instruction names no country": (
        "instruction", lambda: paper_row(instruction="Answer the following question:\n\n")
    ),
    "instruction with blank country": (
        "instruction", lambda: paper_row(instruction="How would someone from   answer the following question:\n\n")
    ),
    "unknown data_type": ("data_type", lambda: paper_row(data_type="test_9")),
    "one option": ("options", lambda: paper_row(options=["(A)Only"], options_dist={"A": 100.0})),
    "no options": ("options", lambda: paper_row(options=[], options_dist={})),
    "options not strings": ("options", lambda: paper_row(options=["(A)x", 2, "(C)y"])),
    "non-positive n": ("n", lambda: paper_row(n=0)),
    "float id": ("id", lambda: paper_row(id=1.5)),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_raises_located_row_error(tmp_path, case):
    field_name, make = BAD_ROWS[case]
    path = write_rows(tmp_path / "rows.json", [paper_row(), paper_row(id="165"), make()])
    with pytest.raises(RowError) as info:
        _read(path)
    _assert_located(info.value, path, 2, field_name)


def test_bad_row_messages_say_what_is_wrong(tmp_path):
    def message(raw):
        with pytest.raises(RowError) as info:
            _parse(raw)
        return str(info.value)

    text = message(paper_row(options_dist={"A": 50.0, "B": 50.0}))
    assert "missing ['C']" in text
    text = message(paper_row(options_dist={"A": 50.0, "B": 30.0, "C": 10.0, "D": 10.0}))
    assert "unexpected ['D']" in text
    assert "negative" in message(paper_row(options_dist={"A": 60.0, "B": -10.0, "C": 50.0}))
    assert "nan" in message(paper_row(options_dist={"A": float("nan"), "B": 30.0, "C": 20.0})).lower()
    assert "zero" in message(paper_row(options_dist={"A": 0.0, "B": 0.0, "C": 0.0}))
    assert "not a number" in message(paper_row(options_dist={"A": "50", "B": 30.0, "C": 20.0}))
    assert "'test_9'" in message(paper_row(data_type="test_9"))
    assert "repeated" in message(paper_row(options=["(A)x", "(A)y", "(C)z"], options_dist={"A": 1, "C": 1}))
    assert "'B)2'" in message(paper_row(options=["(A)x", "B)2", "(C)z"]))
    assert "at least 2" in message(paper_row(options=["(A)Only"], options_dist={"A": 100.0}))
    assert "missing field" in message({k: v for k, v in paper_row().items() if k != "input"})


def test_row_not_an_object(tmp_path):
    path = write_rows(tmp_path / "rows.json", [paper_row(), ["not", "a", "row"]])
    with pytest.raises(RowError) as info:
        _read(path)
    assert str(path) in str(info.value)
    assert "row 1" in str(info.value)
    assert info.value.index == 1


def test_malformed_json(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[\n  {"id": "164",\n   "instruction": oops}\n]', encoding="utf-8")
    with pytest.raises(RowError) as info:
        _read(path)
    text = str(info.value)
    assert str(path) in text
    assert "line 3" in text
    assert "column" in text


def test_top_level_not_a_list(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps({"rows": [paper_row()]}), encoding="utf-8")
    with pytest.raises(RowError) as info:
        _read(path)
    assert str(path) in str(info.value)
    assert "list" in str(info.value)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        _read(tmp_path / "nope.json")


def test_drop_invalid_collects_bad_rows(tmp_path):
    rows = [
        paper_row(id="1"),
        {k: v for k, v in paper_row(id="2").items() if k != "options"},
        paper_row(id="3"),
        paper_row(id=4, options_dist={"A": 60.0, "B": -10.0, "C": 50.0}),
        paper_row(id="5", data_type="train"),
    ]
    path = write_rows(tmp_path / "rows.json", rows)
    loaded = _read(path, drop_invalid=True)
    assert [r.question_id for r in loaded.rows] == ["1", "3", "5"]
    assert [r.index for r in loaded.rows] == [0, 2, 4]
    assert [bad["index"] for bad in loaded.invalid] == [1, 3]
    assert [bad["id"] for bad in loaded.invalid] == ["2", 4]
    assert all(bad["file"] == str(path) for bad in loaded.invalid)
    assert "row 1" in loaded.invalid[0]["error"] and "'options'" in loaded.invalid[0]["error"]
    assert "row 3" in loaded.invalid[1]["error"] and "'options_dist'" in loaded.invalid[1]["error"]

    # without drop_invalid the first bad row (index 1, not 3) raises
    with pytest.raises(RowError) as info:
        _read(path)
    assert info.value.index == 1
    assert info.value.field_name == "options"


def test_drop_invalid_with_non_object_row(tmp_path):
    path = write_rows(tmp_path / "rows.json", [paper_row(), 42])
    loaded = _read(path, drop_invalid=True)
    assert len(loaded.rows) == 1
    assert loaded.invalid[0]["index"] == 1 and loaded.invalid[0]["id"] is None


def test_jsonl_input(tmp_path):
    path = tmp_path / "rows.jsonl"
    lines = [json.dumps(paper_row(id="1")), "", json.dumps(paper_row(id=2, data_type="train"))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    loaded = _read(path)
    assert [r.question_id for r in loaded.rows] == ["1", "2"]
    assert [r.subset for r in loaded.rows] == ["wvs_valid", "wvs_train"]
    assert [r.index for r in loaded.rows] == [0, 1]
    assert loaded.rows[0].target == pytest.approx((0.5, 0.3, 0.2), abs=1e-12)


def test_jsonl_bad_row_and_malformed_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(paper_row()) + "\n" + json.dumps(paper_row(data_type="nope")) + "\n", encoding="utf-8")
    with pytest.raises(RowError) as info:
        _read(path)
    _assert_located(info.value, path, 1, "data_type")

    path.write_text(json.dumps(paper_row()) + "\n{broken\n", encoding="utf-8")
    with pytest.raises(RowError) as info:
        _read(path)
    assert str(path) in str(info.value)
    assert "line 2" in str(info.value)


def test_custom_country_pattern(tmp_path):
    instruction = "来自Andorra的人会如何回答以下问题：\n\n"
    path = write_rows(tmp_path / "rows.json", [paper_row(instruction=instruction)])
    with pytest.raises(RowError):
        _read(path)
    loaded = _read(path, country_pattern=r"来自(?P<country>.+?)的人")
    assert loaded.rows[0].country == "Andorra"


# ---------------------------------------------------------------------------------------------- real data


REAL_FILES = [
    ("wvs7/sft_wvs_train.json", {"train": "train"}, 6841),
    ("wvs7/sft_wvs_valid.json", {"valid": "valid"}, 1586),
    ("wvs7/sft_wvs_test.json", {f"test_{i}": f"test_{i}" for i in range(1, 8)}, 6866),
    ("pew/pew_c1_test.json", {"pew_c1": "pew_c1"}, 444),
]


def test_shared_files_parse(shared_data):
    for relative, subset_names, count in REAL_FILES:
        path = shared_data / relative
        loaded = read_rows(path, subset_names=subset_names)
        assert loaded.invalid == []
        assert len(loaded.rows) == count, relative
        for row in loaded.rows:
            assert abs(sum(row.target) - 1.0) <= 1e-9, (relative, row.index)
            assert len(row.target) == len(row.letters) == len(row.options) >= 2
            assert all(share >= 0 for share in row.target)
            assert row.country
            assert row.subset in subset_names.values()
    first = read_rows(shared_data / "wvs7/sft_wvs_valid.json", subset_names={"valid": "valid"}).rows[0]
    assert (first.country, first.question_id) == ("Andorra", "164")
    assert first.letters == tuple("ABCDEFGHIJ")
    assert first.target[0] == pytest.approx(25.502008032128515 / 100, abs=1e-12)
    assert first.target[9] == pytest.approx(10.341365461847388 / 100, abs=1e-12)
