import json

import pytest
from scipy.spatial.distance import jensenshannon

from simlab.analysis.languages import compare, load_cells, main


def _write(run, records):
    run.mkdir()
    (run / "predictions.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")


def _record(country, qid, human, predicted, subset="C1-Q2"):
    return {"subset": subset, "country": country, "question_id": qid, "letters": ["A", "B"], "human": human,
            "predicted": predicted}


def test_compare_two_languages(tmp_path):
    en = [_record("Chile", "164", [0.8, 0.2], [0.7, 0.3]), _record("Peru", "164", [0.4, 0.6], [0.5, 0.5]),
          _record("Chile", "165", [0.5, 0.5], [0.5, 0.5])]
    zh = [_record("Chile", "164", [0.8, 0.2], [0.4, 0.6]), _record("Peru", "164", [0.4, 0.6], [0.5, 0.5]),
          _record("Chile", "999", [0.5, 0.5], [0.5, 0.5], subset="other")]
    _write(tmp_path / "en", en), _write(tmp_path / "zh", zh)
    result = compare(load_cells(tmp_path / "en", "C1-Q2"), load_cells(tmp_path / "zh", "C1-Q2"))
    assert result["cells"] == 2 and result["only_first"] == 1 and result["only_second"] == 0
    expected = ((1 - jensenshannon([0.7, 0.3], [0.4, 0.6])) + 1.0) / 2
    assert result["agreement_one_minus_jsd"] == pytest.approx(expected)
    # ties count as fractions: Peru's 50/50 prediction holds the humans' B half the time, and two 50/50
    # predictions pick the same option half the time
    assert result["agreement_same_argmax"] == 0.25
    assert result["accuracy"] == {"first": 0.75, "second": 0.25}
    assert main(["--runs", str(tmp_path / "en"), str(tmp_path / "zh"), "--out", str(tmp_path / "cmp.md")]) == 0
    assert "Cells in both runs: 2" in (tmp_path / "cmp.md").read_text()


def test_mismatched_letters_and_missing_runs_are_errors(tmp_path):
    _write(tmp_path / "a", [_record("Chile", "1", [1, 0], [0.5, 0.5])])
    other = _record("Chile", "1", [1, 0], [0.5, 0.5]) | {"letters": ["A", "C"]}
    _write(tmp_path / "b", [other])
    with pytest.raises(ValueError, match="letters differ"):
        compare(load_cells(tmp_path / "a", "C1-Q2"), load_cells(tmp_path / "b", "C1-Q2"))
    with pytest.raises(FileNotFoundError, match="predictions.jsonl"):
        load_cells(tmp_path / "nowhere", "C1-Q2")
