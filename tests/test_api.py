"""simlab from Python: evaluate() is task=zeroshot as run.py runs it (the same numbers), load_survey() gives the
rows as tidy or wide tables, pandas or Hugging Face datasets."""

import json
import subprocess
import sys

import pytest
from conftest import REPO, paper_row, write_rows

import simlab
from simlab.common.extras import MissingExtra
from simlab.data.frames import LONG_COLUMNS, WIDE_COLUMNS, rows_table
from simlab.data.rows import read_rows
from simlab.tasks.api import override_value


def test_evaluate_gives_run_py_s_numbers(tmp_path, tiny_llama_dir, shared_data):
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    common = ["model=hf", f"model.path={tiny_llama_dir}", "task=zeroshot", "logger=none", f"data.root={shared_data}",
              "data.limit_per_subset=6", "data.max_length=2048", "data.test_subsets=[C2-Q1,C3-Q3]"]
    result = subprocess.run([sys.executable, "run.py", *common, f"hydra.run.dir={tmp_path / 'cli'}"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    by_cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())

    metrics = simlab.evaluate(model=tiny_llama_dir, subsets=["C2-Q1", "C3-Q3"], root=shared_data, limit=6,
                              data__max_length=2048, output_dir=tmp_path / "api")
    assert metrics == json.loads((tmp_path / "api" / "metrics.json").read_text())
    assert metrics["task"] == "zeroshot" and list(metrics["subsets"]) == ["C2-Q1", "C3-Q3"]
    for subset in ("C2-Q1", "C3-Q3"):
        assert metrics["subsets"][subset] == pytest.approx(by_cli["subsets"][subset], abs=1e-6)
    assert not GlobalHydra.instance().is_initialized() and not HydraConfig.initialized()  # nothing left behind

    temporary = simlab.evaluate(model=tiny_llama_dir, subsets="C2-Q1", root=shared_data, limit=6,
                                overrides=["data.max_length=2048"])
    assert temporary["subsets"]["C2-Q1"] == pytest.approx(metrics["subsets"]["C2-Q1"], abs=1e-6)


def test_evaluate_refuses_an_unknown_model():
    with pytest.raises(ValueError, match="neither a local model folder nor a model config.*smollm2_135m"):
        simlab.evaluate(model="no_such_model")


def test_override_values_read_back_as_given():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for value in [None, True, 3, 0.5, "C1-Q2", "/a b/it's", ["C1-Q2", "C2-Q1"], "null", "x=y,z"]:
        parsed = parser.parse_override(f"k={override_value(value)}").value()
        assert parsed == (list(value) if isinstance(value, list) else value), value


@pytest.fixture
def two_rows(tmp_path):
    rows = [paper_row(), paper_row(instruction="How would someone from Chile answer the following question:\n\n",
                                   options_dist={"A": 10.0, "B": 60.0, "C": 30.0}, n=1200)]
    path = write_rows(tmp_path / "rows.json", rows)
    return read_rows(path, subset_names={"valid": "C1-Q2"}).rows


def test_long_table_is_one_row_per_country_question_option(two_rows):
    frame = rows_table(two_rows, format="long")
    assert list(frame.columns) == LONG_COLUMNS and len(frame) == 6
    andorra = frame[frame.country == "Andorra"]
    assert list(andorra.letter) == ["A", "B", "C"] and list(andorra.option) == ["Not at all important", "2",
                                                                                 "Very important"]
    assert list(andorra.share) == pytest.approx([0.5, 0.3, 0.2]) and andorra.n.isna().all()
    assert list(frame[frame.country == "Chile"].n) == [1200] * 3
    assert set(frame.subset) == {"C1-Q2"} and set(frame.question_id) == {"164"} and set(frame.survey) == {"wvs7"}


def test_wide_table_is_one_row_per_country_question(two_rows):
    frame = rows_table(two_rows, format="wide")
    assert list(frame.columns) == WIDE_COLUMNS and list(frame.country) == ["Andorra", "Chile"]
    assert frame.shares[1] == pytest.approx({"A": 0.1, "B": 0.6, "C": 0.3})
    assert frame.options[0] == {"A": "Not at all important", "B": "2", "C": "Very important"}
    with pytest.raises(ValueError, match="format must be one of"):
        rows_table(two_rows, format="tall")


def test_datasets_without_the_extra_names_it(two_rows, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(MissingExtra, match=r'pip install "simlab\[datasets\]"'):
        rows_table(two_rows, to="datasets")


def test_datasets_table(two_rows):
    pytest.importorskip("datasets")  # the extra `datasets` (in `dev`)
    dataset = rows_table(two_rows, format="long", to="datasets")
    assert dataset.column_names == LONG_COLUMNS and dataset.num_rows == 6 and dataset[0]["share"] == pytest.approx(0.5)
    wide = rows_table(two_rows, format="wide", to="datasets")
    assert wide.num_rows == 2 and wide[1]["shares"] == pytest.approx({"A": 0.1, "B": 0.6, "C": 0.3})


def test_load_survey_reads_a_subset_as_a_run_does(shared_data):
    frame = simlab.load_survey("C1-Q2", root=shared_data)
    rows = read_rows(shared_data / "wvs7" / "sft_wvs_valid.json",
                     subset_names={"valid": "C1-Q2"}).rows
    assert len(frame) == sum(len(r.options) for r in rows) and set(frame.subset) == {"C1-Q2"}
    assert frame.groupby(["country", "question_id"]).share.sum().to_numpy() == pytest.approx(1.0)
    wide = simlab.load_survey(["C1-Q2", "C2-Q1"], root=shared_data, format="wide")
    assert not wide.duplicated(["subset", "country", "question_id"]).any()
    assert set(wide.subset) == {"C1-Q2", "C2-Q1"} and len(wide[wide.subset == "C1-Q2"]) == len(rows)
    with pytest.raises(ValueError, match=r"split \['C9-Q9'\] is not a subset of data=wvs_en"):
        simlab.load_survey("C9-Q9", root=shared_data)
