"""The survey data shipped in the package: byte-identical to its documented source, read compressed or plain alike,
overridden by $SIMLAB_DATA / data.root, and made by the committed scripts/pack_data.py."""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import re
import sys
from pathlib import Path

import pytest
from conftest import REPO, paper_row, write_rows

from simlab.data import SurveyDataModule
from simlab.data.files import find_data_file, read_data_bytes, read_data_json
from simlab.data.rows import read_rows
from simlab.paths import PACKAGED_DATA

sys.path.insert(0, str(REPO / "scripts"))
import pack_data  # noqa: E402

MANIFEST = PACKAGED_DATA / "SHA256SUMS"
SUBSETS = {"valid": "C1-Q2"}


def manifest() -> dict[str, str]:
    """relative name -> sha256 of the uncompressed bytes, from SHA256SUMS (`sha256sum` format)."""
    entries = {}
    for line in MANIFEST.read_text(encoding="utf-8").splitlines():
        digest, name = line.split("  ", 1)
        entries[name] = digest
    return entries


def test_every_shipped_file_decompresses_to_its_checksum():
    entries = manifest()
    assert sorted(entries) == sorted(pack_data.FILES)
    for name, digest in entries.items():
        packed = PACKAGED_DATA / f"{name}.xz"
        assert hashlib.sha256(read_data_bytes(packed)).hexdigest() == digest, name


def test_nothing_else_is_shipped_and_no_respondent_data():
    shipped = {p.relative_to(PACKAGED_DATA).as_posix() for p in PACKAGED_DATA.rglob("*") if p.is_file()}
    assert shipped == {f"{name}.xz" for name in manifest()} | {"SHA256SUMS", "README.md"}
    assert not any("respondent" in name or name.endswith((".csv", ".csv.gz")) for name in shipped)


def test_the_data_card_lists_the_same_checksums():
    """docs/DATA.md's file table gives each shipped file's sha256: the card and the data cannot drift apart."""
    card = (REPO / "docs" / "DATA.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", card, flags=re.MULTILINE))
    assert listed == manifest()


def test_shipped_rows_match_the_documented_counts():
    counts = {"wvs7/sft_wvs_train.json": 6841, "wvs7/sft_wvs_valid.json": 1586, "wvs7/sft_wvs_test.json": 6866,
              "wvs7_zh/sft_wvs_zh_valid.json": 1586, "pew/global_pew_test.json": 3991,
              "pew/pew_c1_test.json": 444, "pew/pew_c3_test.json": 264,
              "wvs7_populations/populations_train.json": 33591, "wvs7_populations/populations_valid.json": 7764,
              "wvs7_populations/populations_test.json": 39245}
    for name, count in counts.items():
        assert len(read_data_json(name, PACKAGED_DATA)) == count, name
    assert len(read_data_json("wvs7/countries.json", PACKAGED_DATA)) == 64
    assert len(read_data_json("wvs7/questionnaire_en.json", PACKAGED_DATA)) == 259


def _roots(tmp_path: Path, rows) -> dict[str, Path]:
    """The same rows as plain JSON, .xz and .gz, each in its own data root."""
    text = json.dumps(rows, ensure_ascii=False).encode("utf-8")
    roots = {}
    for kind, name, data in (("plain", "my.json", text), ("xz", "my.json.xz", lzma.compress(text)),
                             ("gz", "my.json.gz", gzip.compress(text, mtime=0))):
        (tmp_path / kind / "survey").mkdir(parents=True)
        (tmp_path / kind / "survey" / name).write_bytes(data)
        roots[kind] = tmp_path / kind
    return roots


def _load(root, files=("survey/my.json",)) -> list:
    data = SurveyDataModule(None, files=list(files), subset_names=SUBSETS, train_subset=None, valid_subset=None,
                            test_subsets=["C1-Q2"], root=None if root is None else str(root))
    data.load_rows()
    return data.rows["C1-Q2"]


def test_plain_xz_and_gz_give_the_same_rows(tmp_path):
    rows = [paper_row(), paper_row(id="165", options_dist={"A": 10.0, "B": 60.0, "C": 30.0})]
    loaded = {kind: _load(root) for kind, root in _roots(tmp_path, rows).items()}
    assert [(r.question_id, r.target, r.file) for r in loaded["xz"]] == [
        (r.question_id, r.target, r.file) for r in loaded["plain"]] == [
        (r.question_id, r.target, r.file) for r in loaded["gz"]]
    assert loaded["plain"][0].file == "survey/my.json"  # the configured name, without the compression suffix
    assert loaded["xz"][0].source.endswith("my.json.xz")  # messages name the file actually read


def test_the_plain_file_wins_over_a_compressed_one(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    write_rows(root / "my.json", [paper_row()])
    (root / "my.json.xz").write_bytes(lzma.compress(json.dumps([paper_row(id="999")]).encode()))
    assert find_data_file("my.json", root) == root / "my.json"
    assert [r.question_id for r in read_rows(root / "my.json", subset_names=SUBSETS).rows] == ["164"]


def test_a_missing_file_names_every_candidate_in_one_line(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        find_data_file("wvs7/none.json", tmp_path)
    text = str(info.value)
    assert "\n" not in text
    assert str(tmp_path / "wvs7" / "none.json") in text and "none.json.xz" in text and "none.json.gz" in text
    with pytest.raises(FileNotFoundError, match=r"\['survey/none.json'\], neither as named nor with .xz or .gz"):
        _load(tmp_path, files=["survey/none.json"])


def test_a_damaged_xz_file_is_a_one_line_error(tmp_path):
    (tmp_path / "bad.json.xz").write_bytes(b"not xz at all")
    with pytest.raises(ValueError, match=r"bad\.json\.xz: not a readable xz file") as info:
        read_rows(tmp_path / "bad.json", subset_names=SUBSETS)
    assert "\n" not in str(info.value)


def test_compressed_jsonl_is_read_as_jsonl(tmp_path):
    lines = "\n".join(json.dumps(row) for row in [paper_row(), paper_row(id="165")]) + "\n"
    (tmp_path / "rows.jsonl.xz").write_bytes(lzma.compress(lines.encode("utf-8")))
    assert [r.question_id for r in read_rows(tmp_path / "rows.jsonl", subset_names=SUBSETS).rows] == ["164", "165"]


def test_simlab_data_overrides_the_shipped_copy_and_data_root_overrides_both(tmp_path, monkeypatch):
    env_root, explicit = tmp_path / "env", tmp_path / "explicit"
    for root, question in ((env_root, "7001"), (explicit, "7002")):
        (root / "wvs7").mkdir(parents=True)
        write_rows(root / "wvs7" / "sft_wvs_valid.json", [paper_row(id=question)])
    files = ["wvs7/sft_wvs_valid.json"]
    monkeypatch.delenv("SIMLAB_DATA", raising=False)
    assert len(_load(None, files)) == 1586  # the shipped copy
    monkeypatch.setenv("SIMLAB_DATA", str(env_root))
    assert [r.question_id for r in _load(None, files)] == ["7001"]
    assert [r.question_id for r in _load(explicit, files)] == ["7002"]


def test_data_root_naming_a_file_says_so(tmp_path):
    a_file = write_rows(tmp_path / "my_survey.json", [paper_row()])
    with pytest.raises(NotADirectoryError, match=r"my_survey\.json \(from data\.root\) is a file, not a folder"):
        _load(a_file, files=["my_survey.json"])


def test_pack_data_makes_the_shipped_form_and_checks_a_readme(tmp_path, monkeypatch, capsys):
    """scripts/pack_data.py on plain files: .xz copies that decompress to the input, and their SHA256SUMS; a
    README.md table whose checksum disagrees with a file stops it."""
    src, out = tmp_path / "src", tmp_path / "out"
    names = ("wvs7/countries.json", "pew/pew_c3_test.json")
    for name in names:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(read_data_bytes(PACKAGED_DATA / f"{name}.xz"))
    monkeypatch.setattr(pack_data, "FILES", names)
    (src / "README.md").write_text(f"| `{names[0]}` | 64 entries | `{manifest()[names[0]]}` |\n", encoding="utf-8")
    lines = pack_data.pack(src, out)
    assert lines == [f"{manifest()[name]}  {name}" for name in names]
    assert (out / "SHA256SUMS").read_text(encoding="utf-8") == "\n".join(lines) + "\n"
    for name in names:
        assert lzma.decompress((out / f"{name}.xz").read_bytes()) == (src / name).read_bytes()
    assert "matches README.md" in capsys.readouterr().out
    (src / "README.md").write_text(f"| `{names[1]}` | 264 rows | `{'0' * 64}` |\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"pew_c3_test\.json: sha256 .* differs from 0{64}"):
        pack_data.pack(src, out)


def test_the_data_card_example_loads_as_documented():
    """docs/examples/my_survey.json with the settings docs/DATA.md gives: 2 questions x 2 countries, one subset."""
    data = SurveyDataModule(None, files=["my_survey.json"], subset_names={"test": "my_survey"}, train_subset=None,
                            valid_subset=None, test_subsets=["my_survey"], root=str(REPO / "docs" / "examples"),
                            survey="my_survey")
    data.load_rows()
    rows = data.rows["my_survey"]
    assert sorted({r.country for r in rows}) == ["Japan", "Kenya"]
    assert sorted({r.question_id for r in rows}) == ["bicycle_weekly", "trust_neighbours"]
    assert [r.n for r in rows] == [400, 300, 400, None]


def test_seeded_draws_do_not_depend_on_where_the_data_lies(tmp_path):
    """[ctrl] countries and shuffled option orders are drawn per row from the configured file name and the row's
    index: the shipped .xz copy and a plain copy elsewhere give the same prompts."""
    plain = tmp_path / "elsewhere"
    (plain / "wvs7").mkdir(parents=True)
    (plain / "wvs7" / "sft_wvs_valid.json").write_bytes(read_data_bytes(PACKAGED_DATA / "wvs7/sft_wvs_valid.json.xz"))

    def prompts(root, draws=True):
        data = SurveyDataModule(None, files=["wvs7/sft_wvs_valid.json"], subset_names=SUBSETS, train_subset=None,
                                valid_subset=None, test_subsets=["C1-Q2"], root=str(root), limit_per_subset=50,
                                country_control=draws, shuffle_options=draws, seed=3)
        data.load_rows()
        return [(r.instruction, r.options) for r in data.rows["C1-Q2"]]

    shipped = prompts(PACKAGED_DATA)
    assert shipped == prompts(plain)
    as_given = prompts(PACKAGED_DATA, draws=False)
    assert all(a != b and a[0] != b[0] for a, b in zip(shipped, as_given))  # every country was replaced
    assert any(a[1] != b[1] for a, b in zip(shipped, as_given))  # and options reordered


def test_build_wvs_reads_the_shipped_questionnaire_and_countries_by_default(tmp_path, monkeypatch):
    """`simlab build-wvs --csv ... --out ...` with no --questionnaire: the data root's (here the shipped, .xz)."""
    from simlab.data.build_wvs import main

    monkeypatch.delenv("SIMLAB_DATA", raising=False)
    questionnaire = read_data_json("wvs7/questionnaire_en.json", PACKAGED_DATA)
    kenya = read_data_json("wvs7/countries.json", PACKAGED_DATA)["Kenya"]["wvs_code"]
    used = [entry for entry in questionnaire if not entry["excluded"]]
    header = "B_COUNTRY," + ",".join(f"Q{entry['id']}" for entry in used)
    answers = ",".join(min(entry["codes"], key=int) for entry in used)  # every respondent: the lowest code
    (tmp_path / "made_up.csv").write_text(f"{header}\n{kenya},{answers}\n{kenya},{answers}\n", encoding="utf-8")
    assert main(["--csv", str(tmp_path / "made_up.csv"), "--out", str(tmp_path / "out")]) == 0
    test = json.loads((tmp_path / "out" / "sft_wvs_test.json").read_text(encoding="utf-8"))
    assert len(test) == 150 + 35 + 60 and {row["data_type"] for row in test} == {"test_2", "test_3", "test_4"}
    assert all(row["n"] == 2 and max(row["options_dist"].values()) == 100.0 for row in test)
