"""Hydra multirun end to end on a tiny model: a failing job does not stop the sweep or lose the other job's
outputs, a model that is not on disk is 'skipped', and the report shows both."""

import csv
import json
import subprocess
import sys

import pytest
from conftest import REPO

from simlab.report import collect_jobs
from simlab.report.build import write_report


def multirun(*overrides):
    return subprocess.run(
        [sys.executable, "run.py", "-m", *overrides], cwd=REPO, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def sweep_with_a_failure(tmp_path_factory, tiny_llama_dir, shared_data):
    sweep = tmp_path_factory.mktemp("sweep")
    result = multirun(
        "model=hf", f"model.path={tiny_llama_dir}", "task=zeroshot", "logger=csv", f"data.root={shared_data}",
        "data.limit_per_subset=4", "data.test_subsets=[C2-Q1]", "data.average_subsets=[]",
        "data.max_length=2048,16",  # the second job's prompts are too long: it must fail, clearly
        f"hydra.sweep.dir={sweep}",
    )
    return sweep, result


def test_failing_job_does_not_stop_the_sweep(sweep_with_a_failure):
    sweep, result = sweep_with_a_failure
    assert result.returncode != 0, "the sweep must still exit with the failed job's error"
    (good,) = sweep.glob("0_*data.max_length=2048*")
    (bad,) = sweep.glob("1_*data.max_length=16*")
    assert json.loads((good / "status.json").read_text())["status"] == "completed"
    assert json.loads((good / "metrics.json").read_text())["subsets"]["C2-Q1"]["n"] == 4
    assert (good / "predictions.jsonl").is_file()
    status = json.loads((bad / "status.json").read_text())
    assert status["status"] == "failed" and "PromptTooLongError" in status["error"]
    assert "max_length=16" in status["error"] and not (bad / "metrics.json").exists()


def test_report_shows_the_failed_row(sweep_with_a_failure, tmp_path):
    sweep, _ = sweep_with_a_failure
    jobs = collect_jobs([sweep])
    assert [(j.label, j.status) for j in jobs] == [("data.max_length=2048", "completed"),
                                                   ("data.max_length=16", "failed")]
    report = write_report(jobs, tmp_path / "report", questionnaire=None).read_text()
    assert "| data.max_length=16 | failed |\n" in report  # the metric tables: one subset column
    assert "| data.max_length=16 | failed | PromptTooLongError" in report  # the jobs table, with the reason
    assert "| data.max_length=2048 | completed |" in report
    with open(tmp_path / "report" / "tables.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["status"] for r in rows if r["row"] == "data.max_length=16"} == {"failed"}
    assert any(r["row"] == "data.max_length=2048" and r["subset"] == "C2-Q1" for r in rows)
    for figure in ("accuracy_by_subset.png", "diversity_C2-Q1.png", "countries_C2-Q1.png"):
        assert (tmp_path / "report" / figure).stat().st_size > 1000


def test_model_not_on_disk_is_skipped_in_a_sweep(tmp_path, shared_data, monkeypatch):
    sweep = tmp_path / "sweep"
    result = multirun("model=vicuna7b", "task=zeroshot", "logger=csv", f"data.root={shared_data}",
                      f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    (job,) = [p for p in sweep.iterdir() if p.is_dir()]
    status = json.loads((job / "status.json").read_text())
    assert status["status"] == "skipped" and "lmsys/vicuna-7b-v1.5" in status["reason"]
