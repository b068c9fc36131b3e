"""What a W&B run holds, read back from the offline run file (not trusted from the calls): the results and
predictions tables, the figures, the adapter artifact; and a later run naming that artifact (wandb:NAME)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from simlab.report.wandb_logging import prediction_rows, results_rows
from simlab.runs.wandb_offline import logged_media, read_run, run_files
from simlab.simulator.artifacts import resolve_adapter

TINY = ("data.limit_per_subset=8", "data.max_length=2048")


def run_py(*overrides, env=None):
    result = subprocess.run([sys.executable, "run.py", *overrides], cwd=REPO, capture_output=True, text=True,
                            timeout=900, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory):
    data = tmp_path_factory.mktemp("wandb_data")  # W&B's staging and cache folders, not the user's
    return {"WANDB_SILENT": "true", "WANDB_DATA_DIR": str(data), "WANDB_CACHE_DIR": str(data / "cache"),
            "WANDB_CONFIG_DIR": str(data / "config")}


@pytest.fixture(scope="module")
def wandb_finetune(tmp_path_factory, tiny_llama_dir, shared_data, wandb_env):
    out = tmp_path_factory.mktemp("wandb_ft") / "run"
    result = run_py("model=hf", f"model.path={tiny_llama_dir}", "experiment=smoke", "logger=wandb", "calibrate=true",
                    *TINY, f"data.root={shared_data}", f"hydra.run.dir={out}", env=wandb_env)
    return out, result


def test_the_offline_run_holds_tables_figures_and_the_adapter(wandb_finetune):
    out, result = wandb_finetune
    files = run_files(out)
    assert len(files) == 1
    run = read_run(files[0])
    media = logged_media(run)
    assert media["results"] == "table-file" and media["predictions"] == "table-file"
    images = sorted(k for k, v in media.items() if v == "image-file")
    assert len(images) >= 2 and "figures/one_minus_jsd_by_subset" in images
    metrics = json.loads((out / "metrics.json").read_text())
    # the results table on disk has every tested subset and the paper average, with metrics.json's numbers
    step = next(s for s in run["history"] if "results/path" in s)
    table = json.loads((files[0].parent / "files" / step["results/path"]).read_text())
    by_subset = {row[0]: dict(zip(table["columns"], row)) for row in table["data"]}
    assert set(by_subset) == set(metrics["subsets"]) | {"paper average"}
    for subset, values in metrics["subsets"].items():
        assert by_subset[subset]["one_minus_jsd"] == pytest.approx(values["one_minus_jsd"])
        assert by_subset[subset]["one_minus_jsd_uncalibrated"] == pytest.approx(
            metrics["uncalibrated"]["subsets"][subset]["one_minus_jsd"])
    assert by_subset["paper average"]["one_minus_jsd"] == pytest.approx(metrics["paper_average"]["one_minus_jsd"])
    step = next(s for s in run["history"] if "predictions/path" in s)
    predictions = json.loads((files[0].parent / "files" / step["predictions/path"]).read_text())
    assert predictions["columns"][:3] == ["subset", "country", "question_id"]
    assert len(predictions["data"]) == sum(v["n"] for v in metrics["subsets"].values())  # 64 rows < the sample
    # the adapter, with its temperature, as a model artifact carrying the run's numbers
    artifact = next(a for a in run["artifacts"] if a["type"] == "model")
    assert {"adapter_config.json", "calibration.json"} <= set(artifact["files"])
    assert artifact["metadata"]["paper_average"] == pytest.approx(metrics["paper_average"])
    assert artifact["metadata"]["calibration"]["temperature"] == metrics["calibration"]["temperature"]
    assert metrics["best_valid"]["metric"] == "val/one_minus_jsd" and 0 < metrics["best_valid"]["value"] <= 1


def test_a_later_run_names_the_adapter_artifact(wandb_finetune, tiny_llama_dir, shared_data, wandb_env, tmp_path):
    out, _ = wandb_finetune
    name = next(a for a in read_run(run_files(out)[0])["artifacts"] if a["type"] == "model")["name"]
    local = resolve_adapter(f"wandb:{name}", search=[out.parent], cache=tmp_path / "cache")
    assert Path(local).parent == tmp_path / "cache"
    for file in ("adapter_model.safetensors", "calibration.json"):
        assert (Path(local) / file).read_bytes() == (out / "adapter" / file).read_bytes()
    run_py("model=hf", f"model.path={tiny_llama_dir}", f"model.adapter=wandb:{name}", "task=zeroshot", "logger=none",
           f"paths.wandb_search=[{out.parent}]", f"paths.artifact_cache={tmp_path / 'cache2'}", *TINY,
           f"data.root={shared_data}", f"hydra.run.dir={tmp_path / 'zs'}", env=wandb_env)
    tuned = json.loads((out / "metrics.json").read_text())
    again = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    assert again["calibration"]["temperature"] == tuned["calibration"]["temperature"]  # the saved one, applied
    for subset, values in tuned["subsets"].items():
        assert again["subsets"][subset]["one_minus_jsd"] == pytest.approx(values["one_minus_jsd"], abs=1e-5)
    with pytest.raises(FileNotFoundError, match="no offline run"):
        resolve_adapter("wandb:adapter-nothing-like-it:v3", search=[out.parent], cache=tmp_path / "c3")


def test_a_report_is_logged_as_one_run_of_the_jobs_group(wandb_finetune, wandb_env, tmp_path):
    out, _ = wandb_finetune
    result = subprocess.run([sys.executable, "-m", "simlab.report", str(out), "--out", str(tmp_path / "report"),
                             "--questionnaire", "none", "--wandb"], cwd=REPO, capture_output=True, text=True,
                            timeout=600, env={**os.environ, **wandb_env})
    assert result.returncode == 0, result.stderr[-3000:]
    run = read_run(run_files(tmp_path / "report")[0])
    media = logged_media(run)
    assert {"tables/one_minus_jsd", "tables/emd", "tables/accuracy"} <= {k for k, v in media.items()
                                                                           if v == "table-file"}
    assert sum(v == "image-file" for v in media.values()) >= 2
    assert run["group"] == read_run(run_files(out)[0])["group"]  # the jobs' group (none for a single run)


def test_results_rows_and_a_seeded_prediction_sample():
    from simlab.data.rows import SurveyRow

    summary = {"subsets": {"S": {"n": 2, "one_minus_jsd": 0.9, "emd": 0.1, "emd_paper": 0.1, "accuracy": 1.0,
                                 "kl": 0.05}},
               "paper_average": {"one_minus_jsd": 0.9, "emd": 0.1, "accuracy": 1.0},
               "noise_ceiling": {"S": {"one_minus_jsd": 0.95}}}
    columns, rows = results_rows(summary)
    assert columns[:3] == ["subset", "n", "one_minus_jsd"] and columns[-1] == "one_minus_jsd_ceiling"
    assert rows[0][0] == "S" and rows[0][-1] == 0.95 and rows[-1][0] == "paper average"
    cells = [SurveyRow("S", str(q), c, "", f"question {q}", ("(A)yes", "(B)no"), ("A", "B"), (0.8, 0.2), None, "f", i)
             for i, (q, c) in enumerate([(1, "Japan"), (1, "Kenya"), (2, "Japan")])]
    predicted = {"S": [[0.8, 0.2], [0.5, 0.5], [0.1, 0.9]]}
    columns, table = prediction_rows({"S": cells}, predicted, sample=2, seed=0)
    again = prediction_rows({"S": cells}, predicted, sample=2, seed=0)[1]
    assert table == again and len(table) == 2
    for line in table:
        row = dict(zip(columns, line))
        if row["predicted"] == "A:0.80 B:0.20":
            assert row["one_minus_jsd"] == pytest.approx(1.0)
        assert row["human_majority"] == "A"
