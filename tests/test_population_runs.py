"""run.py end to end on population rows (data=wvs_populations with data.root at a tiny hand-made population folder)
and the tiny random Llama: a fine-tune, then a zero-shot attribute-[ctrl] pass with its adapter, and a re-analysis.
Each writes metrics.json per subset and predictions.jsonl keyed by population."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from population_data import write_population_data
from test_run import SUBSETS, run_py

from simlab.runs.predictions import record_population_key

ROWS = {"C1-Q2": 4, "C1-Q3": 4, "C2-Q1": 4, "C2-Q2": 2, "C2-Q3": 2, "C3-Q1": 4, "C3-Q2": 2, "C3-Q3": 2}


@pytest.fixture(scope="module")
def population_runs(tmp_path_factory, tiny_llama_dir):
    base = tmp_path_factory.mktemp("population_runs")
    root = write_population_data(base / "data")
    common = ["data=wvs_populations", f"data.root={root}", "model=hf", f"model.path={tiny_llama_dir}", "logger=csv",
              "data.max_length=2048"]
    run_py(*common, "task=finetune", "experiment=smoke", f"hydra.run.dir={base / 'ft'}")
    run_py(*common, "method=zs_attribute_ctrl", f"model.adapter={base / 'ft' / 'adapter'}",
           f"hydra.run.dir={base / 'zs_ctrl'}")
    return base


def _lines(run):
    return [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name,task", [("ft", "finetune"), ("zs_ctrl", "zeroshot")])
def test_each_run_scores_every_subset_of_populations(population_runs, name, task):
    run = population_runs / name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == task and list(metrics["subsets"]) == SUBSETS
    assert {s: v["n"] for s, v in metrics["subsets"].items()} == ROWS
    assert all(0 <= v["one_minus_jsd"] <= 1 for v in metrics["subsets"].values())
    assert all(c["rows_with_n"] == ROWS[s] for s, c in metrics["noise_ceiling"].items())
    lines = _lines(run)
    assert len(lines) == sum(ROWS.values())
    keys = {(line["subset"], record_population_key(line), line["question_id"]) for line in lines}
    assert len(keys) == len(lines) and all(line["population"]["country"] == line["country"] for line in lines)
    assert {line["population"]["sex"] for line in lines} == {"female", "male"}


def test_the_adapter_records_the_wording_and_the_ctrl_run_its_prompts(population_runs):
    manifest = json.loads((population_runs / "ft" / "adapter" / "simulator.json").read_text())
    wording = manifest["prompt"]["population_wording"]
    assert wording["template"] == "How would {population} from {country} answer the following question:\n\n"
    assert wording["subjects"]["sex"] == {"female": "a woman", "male": "a man"}
    metrics = json.loads((population_runs / "zs_ctrl" / "metrics.json").read_text())
    assert metrics["settings"]["attribute_control"] is True
    assert "attribute_control" not in json.loads((population_runs / "ft" / "metrics.json").read_text())["settings"]
    for line in _lines(population_runs / "zs_ctrl"):
        shown = line["prompt_population"]
        assert shown["country"] == line["country"] and shown != line["population"]
        assert shown.keys() == line["population"].keys()


def test_a_population_run_is_reanalysed_from_its_resolved_config(population_runs, tmp_path):
    from simlab.analysis.ceiling import noise_ceiling
    from simlab.analysis.reanalyse import load_run_rows, reanalyse

    run = population_runs / "zs_ctrl"
    original = json.loads((run / "metrics.json").read_text())
    again = reanalyse(run, tmp_path / "again")
    assert again["noise_ceiling"] == original["noise_ceiling"]
    assert again["subsets"] == original["subsets"]
    # the ceiling resamples each subgroup's n_eff (80.5 and 81.5 in the fixture, rounded), never its n (120, 130)
    rows = load_run_rows(run).rows
    for subset, ceiling in original["noise_ceiling"].items():
        simple = [replace(r, n=round(r.n_eff), n_eff=None) for r in rows[subset]]
        assert noise_ceiling(simple, samples=ceiling["samples"], seed=ceiling["seed"]) == ceiling
        unweighted = [replace(r, n_eff=None) for r in rows[subset]]
        assert noise_ceiling(unweighted, samples=ceiling["samples"], seed=ceiling["seed"]) != ceiling
