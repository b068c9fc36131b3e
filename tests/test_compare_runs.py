import json

import pytest

from simlab.report.compare import comparison_table, load_metrics, main


def _run(tmp_path, name, subsets, average=None):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"subsets": subsets, "paper_average": average}))
    return folder


def test_table_side_by_side(tmp_path, capsys):
    zs = _run(tmp_path, "zs", {"C2-Q1": {"n": 3, "one_minus_jsd": 0.5, "accuracy": 0.25}},
              {"one_minus_jsd": 0.5, "accuracy": 0.25})
    ft = _run(tmp_path, "ft", {"C2-Q1": {"n": 3, "one_minus_jsd": 0.75, "accuracy": 0.5},
                              "C3-Q1": {"n": 2, "one_minus_jsd": 0.8, "accuracy": 1.0}})
    table = comparison_table([load_metrics(zs), load_metrics(ft)], ["ZS", "FT"], ["one_minus_jsd", "accuracy"])
    lines = table.splitlines()
    assert lines[0] == "| subset | n | 1-JSD ZS | 1-JSD FT | accuracy ZS | accuracy FT |"
    assert lines[2] == "| C2-Q1 | 3 | 0.5000 | 0.7500 | 0.2500 | 0.5000 |"
    assert lines[3] == "| C3-Q1 | 2 | - | 0.8000 | - | 1.0000 |"
    assert lines[4] == "| paper average | | 0.5000 | - | 0.2500 | - |"
    assert main(["--runs", str(zs), str(ft), "--names", "ZS", "FT"]) == 0
    assert "C3-Q1" in capsys.readouterr().out


def test_missing_run_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        load_metrics(tmp_path)
