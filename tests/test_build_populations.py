"""Tests of `simlab build-populations` on small made-up respondent files in the official column layout.

Every respondent here is invented (respondent-level WVS data is never committed); the expected shares, n and
n_eff are worked out by hand from the rows below.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import pytest
from conftest import REPO

from simlab.cli import main as cli_main
from simlab.data import build_wvs
from simlab.data.build_populations import OUTPUT_FILES, REPORT_FILE, Settings, build, main
from simlab.data.build_wvs import BuildError
from simlab.data.files import read_data_bytes, read_data_json
from simlab.data.populations import Population, PopulationWording
from simlab.data.respondents import parse_age_bands, parse_by
from simlab.paths import PACKAGED_DATA

sys.path.insert(0, str(REPO / "scripts"))
import compare_country_rows  # noqa: E402

CODES_4 = {"1": "A", "2": "B", "3": "C", "4": "D"}


def question(qid, group, options, codes):
    return {"id": str(qid), "group": group, "excluded": False, "dimension": "made up",
            "input": f"Question {qid}? \nHere are the options: \n", "options": options, "codes": codes,
            "input_source": "made up"}


QUESTIONNAIRE = [
    question(1, "Q1", ["(A)Very", "(B)Rather", "(C)Not very", "(D)Not at all"], CODES_4),
    question(3, "Q1", ["(X)Hard to say", "(A)Yes", "(B)No"], {"0": "X", "1": "A", "2": "B"}),
    question(164, "Q2", ["(A)One", "(B)Two", "(C)Three"], {"1": "A", "2": "B", "3": "C"}),
    question(199, "Q3", ["(A)Yes", "(B)No"], {"1": "A", "2": "B"}),
]
COUNTRIES = {
    "Alpha": {"wvs_code": 10, "iso3": "ALP", "groups": ["C1"]},
    "Beta": {"wvs_code": 5, "iso3": "BET", "groups": ["C1"]},
    "Gamma": {"wvs_code": 20, "iso3": "GAM", "groups": ["C2"]},
    "Delta": {"wvs_code": 30, "iso3": "DEL", "groups": ["C2", "C3"]},
}
HEADER = ["B_COUNTRY", "W_WEIGHT", "Q1", "Q3", "Q164", "Q199", "Q260", "Q262", "Q275R"]
# Alpha, the 10 respondents worked by hand: Q1, sex (1 male, 2 female), age, weight
ALPHA = [
    # B_COUNTRY, W_WEIGHT, Q1, Q3, Q164, Q199, Q260, Q262, Q275R
    (10, 2.0, 1, 0, 1, 1, 2, 20, 1),
    (10, 1.0, 2, 1, 2, 1, 2, 35, 2),
    (10, 1.0, 1, 2, 3, 2, 2, 60, 3),
    (10, 3.0, -1, 1, 1, 1, 2, 40, 1),  # no answer to Q1: in no Q1 share, n or n_eff
    (10, 0.5, 2, 1, 1, 2, 1, 25, 2),
    (10, 0.5, 3, 1, 2, 2, 1, 55, -2),
    (10, 1.0, 3, 2, 1, 1, 1, 70, 3),
    (10, 2.0, 4, 1, 1, 1, 1, 33, 1),
    (10, 1.0, 1, 1, 2, 2, -2, 45, 2),  # sex missing: left out of every breakdown by sex, in the country's shares
    (10, 1.0, 2, 1, 1, 1, 1, -5, 3),  # age missing
]
OTHERS = [  # Beta (C1), Gamma (C2), Delta (C2 and C3); Beta never answers Q199 (not asked there)
    (5, 1.0, 1, 1, 1, -4, 1, 30, 1), (5, 1.2, 2, 2, 3, -4, 2, 30, 2), (5, 0.8, 2, 0, 2, -4, 2, 19, 3),
    (20, 1.0, 4, 1, 1, 2, 1, 50, 1), (20, 1.0, 3, 2, 2, 1, 2, 50, 2),
    (30, 1.0, 1, 1, 3, 1, 1, 16, 1), (30, 2.0, 2, 1, 3, 2, 2, 99, 2), (30, 1.0, 1, 2, 1, 2, 2, 45, 3),
]


def write_file(path: Path, rows, header=HEADER, index_column=True) -> Path:
    """A respondent file as the shared folder has them: a first, unnamed index column; gzip when named .gz."""
    lines = [("," if index_column else "") + ",".join(header)]
    lines += [(f"{number}," if index_column else "") + ",".join(str(value) for value in row)
              for number, row in enumerate(rows)]
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "questionnaire.json").write_text(json.dumps(QUESTIONNAIRE), encoding="utf-8")
    (tmp_path / "countries.json").write_text(json.dumps(COUNTRIES), encoding="utf-8")
    folder = tmp_path / "respondents"
    folder.mkdir()
    write_file(folder / "ALP.csv.gz", ALPHA)
    for iso, code in (("BET", 5), ("GAM", 20), ("DEL", 30)):
        write_file(folder / f"{iso}.csv.gz", [row for row in OTHERS if row[0] == code])
    write_file(folder / "NIR.csv.gz", [(909, 1.0, 1, 1, 1, 1, 1, 30, 1)])  # skipped, as in the real folder
    return tmp_path


def run(inputs, out="out", **settings):
    settings = Settings(**{"min_n": 1, **settings})
    report = build(inputs / "respondents", inputs / "questionnaire.json", inputs / "countries.json", inputs / out,
                   settings)
    rows = {key: json.loads((inputs / out / f"populations_{key}.json").read_text(encoding="utf-8"))
            for key in ("train", "valid", "test")}
    return rows, report


def alpha_q1(rows):
    return [row for row in rows["train"] if row["population"]["country"] == "Alpha" and row["id"] == "1"]


def test_weighted_shares_n_and_n_eff_by_hand(inputs):
    rows, report = run(inputs, by=("sex",))
    female, male = alpha_q1(rows)
    assert female["population"] == {"country": "Alpha", "sex": "female"}
    assert female["instruction"] == "How would a woman from Alpha answer the following question:\n\n"
    # women answering Q1: codes 1, 2, 1 with weights 2, 1, 1 (the woman who did not answer is not counted)
    assert list(female["options_dist"]) == ["A", "B", "C", "D"]  # first occurrence, then the zero-filled
    assert female["options_dist"] == pytest.approx({"A": 75.0, "B": 25.0, "C": 0.0, "D": 0.0})
    assert female["n"] == 3 and female["n_eff"] == 2.67  # 4^2 / (4 + 1 + 1)
    # men: codes 2, 3, 3, 4, 2 with weights .5, .5, 1, 2, 1 (total 5); the man without an age is in a sex breakdown
    assert list(male["options_dist"]) == ["B", "C", "D", "A"]
    assert male["options_dist"] == pytest.approx({"B": 30.0, "C": 30.0, "D": 40.0, "A": 0.0})
    assert male["n"] == 5 and male["n_eff"] == 3.85  # 25 / 6.5
    # the whole country, same weights, includes the respondent without a sex: weights 10 in all
    assert female["country_shares"] == male["country_shares"]
    assert female["country_shares"] == pytest.approx({"A": 40.0, "B": 25.0, "C": 15.0, "D": 20.0})
    assert list(female) == ["id", "instruction", "input", "options", "options_dist", "data_type", "population", "n",
                            "n_eff", "country_shares"]
    assert report["countries"]["Alpha"] == {"file": "ALP.csv.gz", "respondents": 10, "left_out": 1,
                                            "without": {"sex": 1}}


def test_unweighted_shares_and_n_eff_equal_to_n(inputs):
    rows, _ = run(inputs, by=("sex",), weights=None)
    female, male = alpha_q1(rows)
    assert female["options_dist"] == {"A": 2 / 3 * 100, "B": 1 / 3 * 100, "C": 0.0, "D": 0.0}
    assert (female["n"], female["n_eff"]) == (3, 3.0) and (male["n"], male["n_eff"]) == (5, 5.0)
    assert female["country_shares"]["A"] == 3 / 9 * 100


def test_sex_by_age_cells_and_who_is_left_out(inputs):
    rows, report = run(inputs)
    cells = {(row["population"]["sex"], row["population"]["age"]): row for row in alpha_q1(rows)}
    assert list(cells) == [("female", "16-29"), ("female", "30-49"), ("female", "50+"), ("male", "16-29"),
                           ("male", "30-49"), ("male", "50+")]
    assert cells["female", "30-49"]["options_dist"] == {"B": 100.0, "A": 0.0, "C": 0.0, "D": 0.0}
    assert cells["male", "50+"]["n"] == 2 and cells["male", "50+"]["n_eff"] == 1.8  # 1.5^2 / 1.25
    assert cells["female", "30-49"]["instruction"] == (
        "How would a woman aged 30 to 49 from Alpha answer the following question:\n\n")
    assert report["countries"]["Alpha"] == {"file": "ALP.csv.gz", "respondents": 10, "left_out": 2,
                                            "without": {"sex": 1, "age": 1}}
    # Delta's 99-year-old is in 50+; rows go part, country, population, question
    train = [(row["population"]["country"], row["population"]["sex"], row["population"]["age"], row["id"])
             for row in rows["train"]]
    assert train == sorted(train, key=lambda k: (["Beta", "Alpha"].index(k[0]), k[1] == "male",
                                                 ["16-29", "30-49", "50+"].index(k[2]), int(k[3])))


def test_missing_codes_are_dropped_and_unasked_questions_counted(inputs):
    rows, report = run(inputs, by=("education",))
    assert report["countries"]["Alpha"]["without"] == {"education": 1}  # Q275R -2
    assert not [row for row in rows["test"] if row["population"]["country"] == "Beta"]  # Q199 all -4 in Beta
    assert report["parts"]["test_1"]["country_questions_not_asked"] == 1
    x_row = next(row for row in rows["train"] if row["id"] == "3" and row["population"] == {
        "country": "Alpha", "education": "lower"})
    assert x_row["options_dist"] == pytest.approx({"X": 2 / 7 * 100, "A": 5 / 7 * 100, "B": 0.0})  # code 0 is X


def test_cells_below_the_minimum_size_are_counted_and_reported(inputs, capsys):
    rows, report = run(inputs, by=("sex",), min_n=4)
    assert [row["population"]["sex"] for row in alpha_q1(rows)] == ["male"]  # women have n=3 on Q1
    train = report["parts"]["train"]
    written = len(rows["train"])
    assert train["rows"] == written and train["populations"] == 4 and train["questions"] == 2
    assert written + train["cells_below_min_n"] == 2 * 2 * 2  # every cell either written or counted
    assert written == 3 and train["cells_below_min_n"] == 5  # Alpha: men on Q1, both sexes on Q3 (women n=4)
    err = capsys.readouterr().err
    assert "train (C1xQ1): 3 rows" in err and "5 cells below n=4 not written" in err


def test_the_report_records_settings_and_input_checksums(inputs):
    folder = inputs / "respondents"
    listed = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.glob("*.csv.gz")}
    (folder / "SHA256SUMS").write_text("".join(f"{digest}  {name}\n" for name, digest in listed.items()
                                               if name != "DEL.csv.gz"), encoding="utf-8")
    _, report = run(inputs)
    saved = json.loads((inputs / "out" / REPORT_FILE).read_text(encoding="utf-8"))
    assert saved == report
    assert report["settings"]["by"] == ["sex", "age"] and report["settings"]["weights"] == "W_WEIGHT"
    assert report["settings"]["age_bands"] == ["16-29", "30-49", "50+"]
    files = report["respondent_files"]["files"]
    assert files["ALP.csv.gz"] == {"sha256": listed["ALP.csv.gz"], "listed_in_SHA256SUMS": True,
                                   "respondents": 10, "skipped_respondents": 0, "countries": ["Alpha"]}
    assert files["DEL.csv.gz"]["listed_in_SHA256SUMS"] is False
    assert files["NIR.csv.gz"] | {"sha256": ""} == {"sha256": "", "listed_in_SHA256SUMS": True, "respondents": 1,
                                                    "skipped_respondents": 1, "countries": []}  # 909, skipped
    assert str(inputs) not in json.dumps(report)  # no machine paths
    (folder / "ALP.csv.gz").write_bytes(gzip.compress(b"B_COUNTRY\n10\n", mtime=0))
    with pytest.raises(BuildError, match=r"ALP\.csv\.gz: sha256 [0-9a-f]{64} differs from .* in .*SHA256SUMS"):
        run(inputs)


def test_whole_countries_unweighted_equal_build_wvs_byte_for_byte(inputs, tmp_path):
    """--by "" --weights none on per-country files == build-wvs on the same respondents in one CSV."""
    pooled = [*OTHERS[:2], *ALPHA[:5], *OTHERS[2:], *ALPHA[5:], (909, 1.0, 1, 1, 1, 1, 1, 30, 1)]
    csv = write_file(tmp_path / "pooled.csv", pooled, index_column=False)
    build_wvs.build(csv, inputs / "questionnaire.json", inputs / "countries.json", tmp_path / "wvs7")
    whole, report = run(inputs, out="whole", by=(), weights=None)
    for key in ("train", "valid", "test"):
        assert (tmp_path / "whole" / f"populations_{key}.json").read_bytes() == (
            tmp_path / "wvs7" / f"sft_wvs_{key}.json").read_bytes(), key
    assert report["parts"]["test_2"]["rows"] > 0 and report["countries"]["Alpha"]["left_out"] == 0
    # the check script agrees, and finds a changed share
    assert compare_country_rows.agrees(compare_country_rows.compare(tmp_path / "whole", tmp_path))
    rows = json.loads((tmp_path / "wvs7" / "sft_wvs_train.json").read_text(encoding="utf-8"))
    rows[0]["options_dist"]["A"] += 0.5
    (tmp_path / "wvs7" / "sft_wvs_train.json").write_text(json.dumps(rows), encoding="utf-8")
    result = compare_country_rows.compare(tmp_path / "whole", tmp_path)
    assert result["max_abs_share_difference"] == pytest.approx(0.5) and not compare_country_rows.agrees(result)
    assert result["rows_compared"] == sum(len(rows) for rows in whole.values())


def test_whole_countries_weighted_carry_n_eff_only(inputs):
    rows, _ = run(inputs, by=())
    alpha = next(row for row in rows["train"] if row["id"] == "1" and "Alpha" in row["instruction"])
    assert alpha["options_dist"] == pytest.approx({"A": 40.0, "B": 25.0, "C": 15.0, "D": 20.0})
    assert alpha["n"] == 9 and alpha["n_eff"] == round(100 / 13.5, 2) and "population" not in alpha


def test_the_command_line_with_compressed_outputs(inputs, capsys):
    import lzma

    args = ["build-populations", "--respondents", str(inputs / "respondents"), "--by", "sex", "--weights", "none",
            "--min-n", "2", "--questionnaire", str(inputs / "questionnaire.json"), "--out", str(inputs / "cli"),
            "--compress"]
    assert cli_main(args) == 0
    first = (inputs / "cli" / "populations_train.json.xz").read_bytes()
    rows = json.loads(lzma.decompress(first))
    assert {row["population"]["sex"] for row in rows} == {"female", "male"} and min(r["n"] for r in rows) >= 2
    assert cli_main(args) == 0 and (inputs / "cli" / "populations_train.json.xz").read_bytes() == first


def one_line_error(capsys, inputs, *extra, respondents="respondents"):
    code = cli_main(["build-populations", "--respondents", str(inputs / respondents), "--questionnaire",
                     str(inputs / "questionnaire.json"), "--out", str(inputs / "bad_out"), *extra])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar, if any
    assert code == 2 and err.startswith("simlab build-populations: error: "), err
    assert not (inputs / "bad_out" / "populations_train.json").exists()
    return err


@pytest.mark.parametrize("change, expected", [
    (lambda h, r: ([c for c in h if c != "Q260"], [x[:6] + x[7:] for x in r]),
     r"ALP\.csv\.gz: column\(s\) missing: Q260 \(--by sex\)"),
    (lambda h, r: ([c for c in h if c != "W_WEIGHT"], [x[:1] + x[2:] for x in r]),
     r"ALP\.csv\.gz: column\(s\) missing: W_WEIGHT \(--weights\)"),
    (lambda h, r: (h, [r[0], (*r[1][:6], "x", *r[1][7:])]), r"ALP\.csv\.gz: data row 2, column Q260: 'x' is not an "
                                                           r"integer answer code"),
    (lambda h, r: (h, [r[0], (*r[1][:2], 1.5, *r[1][3:])]), r"ALP\.csv\.gz: data row 2, column Q1: .*1\.5.* is not "
                                                           r"an integer answer code"),
    (lambda h, r: (h, [r[0], (*r[1][:6], 3, *r[1][7:])]), r"ALP\.csv\.gz: data row 2, column Q260: code 3 is not a "
                                                         r"sex code"),
    (lambda h, r: (h, [r[0], r[1], (999, *r[2][1:])]), r"ALP\.csv\.gz: data row 3: unknown country code "
                                                      r"B_COUNTRY=999"),
    (lambda h, r: (h, [r[0], (r[1][0], 0.0, *r[1][2:])]), r"ALP\.csv\.gz: data row 2, column W_WEIGHT: weight 0\.0 "
                                                         r"is not positive"),
    (lambda h, r: (h, [r[0], (r[1][0], "", *r[1][2:])]), r"ALP\.csv\.gz: data row 2, column W_WEIGHT: .* is not a "
                                                        r"finite number"),
    (lambda h, r: (h, [r[0], (*r[1][:2], 7, *r[1][3:])]), r"ALP\.csv\.gz: data row 2, column Q1: answer code 7"),
])
def test_bad_respondent_files_are_one_line_errors(inputs, capsys, change, expected):
    header, rows = change(HEADER, ALPHA[:3])
    write_file(inputs / "respondents" / "ALP.csv.gz", rows, header=header)
    assert re.search(expected, one_line_error(capsys, inputs, "--by", "sex"))


def test_bad_settings_and_folders_are_one_line_errors(inputs, capsys):
    assert "--by: unknown attribute(s) ['religion']" in one_line_error(capsys, inputs, "--by", "sex,religion")
    assert "overlaps or precedes 16-29" in one_line_error(capsys, inputs, "--age-bands", "16-29,20-40")
    assert "is not LOW-HIGH or LOW+" in one_line_error(capsys, inputs, "--age-bands", "young")
    assert "--min-n must be at least 1" in one_line_error(capsys, inputs, "--min-n", "0")
    assert "--respondents is not a folder" in one_line_error(capsys, inputs, respondents="nowhere")
    (inputs / "empty").mkdir()
    assert "no respondent files" in one_line_error(capsys, inputs, respondents="empty")
    write_file(inputs / "respondents" / "ALP2.csv", ALPHA[:2])
    assert "country Alpha (B_COUNTRY=10) is also in ALP.csv.gz" in one_line_error(capsys, inputs)


def test_parsing_of_by_and_age_bands():
    assert parse_by("age, sex") == ("sex", "age") and parse_by("") == ()
    assert [band.label for band in parse_age_bands("18-24,25-64,65+")] == ["18-24", "25-64", "65+"]
    with pytest.raises(BuildError, match="named twice"):
        parse_by("sex,sex")
    with pytest.raises(BuildError, match="ends before it starts"):
        parse_age_bands("30-20")


def test_main_with_custom_age_bands(inputs):
    assert main(["--respondents", str(inputs / "respondents"), "--by", "age", "--age-bands", "18-39,40+",
                 "--weights", "none", "--min-n", "1", "--questionnaire", str(inputs / "questionnaire.json"),
                 "--out", str(inputs / "custom")]) == 0
    rows = json.loads((inputs / "custom" / "populations_train.json").read_text(encoding="utf-8"))
    assert {row["population"]["age"] for row in rows} == {"18-39", "40+"}
    report = json.loads((inputs / "custom" / REPORT_FILE).read_text(encoding="utf-8"))
    assert report["countries"]["Delta"]["without"] == {"age": 1}  # 16 years old: in no band, counted
    assert "aged 40 or older" in next(row["instruction"] for row in rows if row["population"]["age"] == "40+")


def respondents_folder() -> Path | None:
    """The shared respondent-level folder: $SIMLAB_DATA/wvs7_respondents, else shared/data/wvs7_respondents beside
    the repository (or beside its parent folder, for a worktree); None where none exists (it is never committed)."""
    roots = [os.environ.get("SIMLAB_DATA"), REPO.parent / "shared" / "data", REPO.parents[1] / "shared" / "data"]
    return next((Path(root) / "wvs7_respondents" for root in roots
                 if root and (Path(root) / "wvs7_respondents").is_dir()), None)


SHIPPED = "wvs7_populations"


def shipped_checksums() -> dict[str, str]:
    lines = (PACKAGED_DATA / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    return {name: digest for digest, name in (line.split("  ", 1) for line in lines)}


@pytest.mark.skipif(respondents_folder() is None, reason="no wvs7_respondents folder (shared data) here")
def test_the_shipped_population_files_are_rebuilt_exactly(tmp_path):
    """`simlab build-populations --respondents <shared>/wvs7_respondents --out DIR` (the defaults) gives the shipped
    files byte for byte (compared by the sha256 of the uncompressed bytes) and the shipped report."""
    build(respondents_folder(), PACKAGED_DATA / "wvs7" / "questionnaire_en.json",
          PACKAGED_DATA / "wvs7" / "countries.json", tmp_path, Settings())
    sums = shipped_checksums()
    for name in [*OUTPUT_FILES.values(), REPORT_FILE]:
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == sums[f"{SHIPPED}/{name}"], name


def test_the_shipped_population_files_agree_with_their_report():
    """Always runs: the shipped rows are what the shipped report says (counts per part, checksums, settings), every
    cell has n >= min_n and n_eff <= n, and each instruction is the default wording of its population."""
    report = read_data_json(f"{SHIPPED}/{REPORT_FILE}", PACKAGED_DATA)
    assert report["settings"]["by"] == ["sex", "age"] and report["settings"]["weights"] == "W_WEIGHT"
    assert report["settings"]["min_n"] == 50 and report["settings"]["age_bands"] == ["16-29", "30-49", "50+"]
    sums, wording = shipped_checksums(), PopulationWording()
    for name in OUTPUT_FILES.values():
        raw = read_data_bytes(PACKAGED_DATA / SHIPPED / f"{name}.xz")
        assert hashlib.sha256(raw).hexdigest() == sums[f"{SHIPPED}/{name}"] == report["outputs"][name]["sha256"]
        rows = json.loads(raw)
        assert len(rows) == report["outputs"][name]["rows"]
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["data_type"]] = counts.get(row["data_type"], 0) + 1
            population = Population.from_mapping(row["population"])
            assert [a for a, _ in population.attributes] == ["sex", "age"]
            assert row["instruction"] == wording.instruction(population)
            assert 50 <= row["n"] and 0 < row["n_eff"] <= row["n"]
            assert set(row["options_dist"]) == set(row["country_shares"])
            assert abs(sum(row["options_dist"].values()) - 100) < 1e-6
        assert counts == {part: entry["rows"] for part, entry in report["parts"].items() if entry["file"] == name}
