"""The report's pieces on made-up runs: labels, table cells, breakdowns computed by hand."""

import json
import math

import pytest

from simlab.report import collect_jobs, metric_table
from simlab.report.breakdown import diversity, per_country, per_dimension
from simlab.runs.status import write_status


def make_run(folder, overrides, subsets, status="completed", records=()):
    folder.mkdir(parents=True)
    write_status(folder, status, overrides, **({"error": "RuntimeError: boom"} if status == "failed" else {}))
    if status == "completed":
        counts = {s: sum(r["subset"] == s for r in records) for s in subsets}
        metrics = {"task": "zeroshot", "subsets": {s: {"one_minus_jsd": v, "emd": 0.1, "accuracy": 0.5, "n": counts[s]}
                                                   for s, v in subsets.items()}}
        (folder / "metrics.json").write_text(json.dumps(metrics))
        (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_rows_are_labelled_by_the_overrides_that_differ(tmp_path):
    make_run(tmp_path / "0_method=zs", ["method=zs", "logger=csv", "adapter=/a"], {"C2-Q1": 0.7})
    make_run(tmp_path / "1_method=ft", ["method=ft", "logger=csv", "adapter=/b"], {}, status="failed")
    jobs = collect_jobs([tmp_path])
    assert [j.label for j in jobs] == ["method=zs", "method=ft"]
    header, rows = metric_table(jobs, "one_minus_jsd")
    assert header == ["row", "C2-Q1"]
    assert rows == [["method=zs", "0.7000"], ["method=ft", "failed"]]


def test_only_a_completed_run_with_every_prediction_is_reported(tmp_path):
    """A killed run's folder never counts: no status, a dead 'running' record, or predictions that are short."""
    import os
    import subprocess
    import sys

    records = [rec("A", "1", [1.0, 0.0], [0.6, 0.4], subset="C2-Q1"),
               rec("B", "1", [0.0, 1.0], [0.6, 0.4], subset="C2-Q1")]
    make_run(tmp_path / "0_good", ["seed=0"], {"C2-Q1": 0.7}, records=records)
    short = make_run(tmp_path / "1_short", ["seed=1"], {"C2-Q1": 0.7}, records=records)
    (short / "predictions.jsonl").write_text(json.dumps(records[0]) + "\n")  # killed while writing (old code)
    no_status = make_run(tmp_path / "2_nostatus", ["seed=2"], {"C2-Q1": 0.7}, records=records)
    (no_status / "status.json").unlink()
    dead = make_run(tmp_path / "3_dead", ["seed=3"], {"C2-Q1": 0.7}, records=records)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = json.loads((dead / "status.json").read_text())
    record.update(status="running", pid=int(gone.stdout))  # a pid that has exited
    (dead / "status.json").write_text(json.dumps(record))
    alive = make_run(tmp_path / "4_alive", ["seed=4"], {"C2-Q1": 0.7}, records=records)
    record = json.loads((alive / "status.json").read_text())
    record.update(status="running", pid=os.getpid())
    (alive / "status.json").write_text(json.dumps(record))
    jobs = {j.path.name: j for j in collect_jobs([tmp_path])}
    assert {name: (j.status, j.ok) for name, j in jobs.items()} == {
        "0_good": ("completed", True), "1_short": ("broken", False), "2_nostatus": ("incomplete", False),
        "3_dead": ("dead", False), "4_alive": ("running", False),
    }
    assert "1 lines, metrics.json counts 2 rows" in jobs["1_short"].reason


def test_a_folder_without_runs_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run folders"):
        collect_jobs([tmp_path])


def rec(country, question, human, predicted, subset="S", **extra):
    return {"subset": subset, "country": country, "question_id": question, "human": human, "predicted": predicted,
            **extra}


def test_diversity_is_one_for_identical_countries_and_undoes_shuffles():
    records = [
        rec("A", "1", [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]),
        rec("B", "1", [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]),
        # the same distributions as country B's model, shown in shuffled order: C B A
        rec("C", "1", [0.0, 0.0, 1.0], [0.5, 0.3, 0.2], option_order=[2, 1, 0]),
        rec("D", "2", [1.0, 0.0], [1.0, 0.0]),  # a question with one country has no pairs
    ]
    (point,) = diversity(records)
    assert point["question_id"] == "1" and point["countries"] == 3
    assert point["model"] == pytest.approx(1.0)  # every country's model answer is the same once unshuffled
    # people: A vs B, A vs C(=B), B vs C(=B) -> two pairs at 1 - JSD(A, B) and one identical pair
    from scipy.spatial.distance import jensenshannon

    expected = (2 * (1 - jensenshannon([0.5, 0.5, 0.0], [1.0, 0.0, 0.0])) + 1.0) / 3
    assert point["human"] == pytest.approx(expected)


def test_per_country_and_per_dimension_means():
    records = [
        rec("A", "1", [1.0, 0.0], [1.0, 0.0]),  # perfect, majority right
        rec("A", "2", [1.0, 0.0], [0.0, 1.0]),  # disjoint: 1-JSD = 1 - sqrt(ln 2) (natural log), majority wrong
        rec("B", "1", [0.0, 1.0], [0.0, 1.0]),
        rec("B", "9", [0.0, 1.0], [0.0, 1.0]),
    ]
    disjoint = 1 - math.sqrt(math.log(2))
    countries = per_country(records, "S")
    assert countries["A"] == pytest.approx({"one_minus_jsd": (1 + disjoint) / 2, "accuracy": 0.5, "n": 2})
    assert countries["B"] == pytest.approx({"one_minus_jsd": 1.0, "accuracy": 1.0, "n": 2})
    dims = per_dimension(records, {"1": "values", "2": "values"})["S"]
    assert dims["values"] == pytest.approx({"one_minus_jsd": (2 + disjoint) / 3, "n": 3})
    assert dims["(not in questionnaire)"] == pytest.approx({"one_minus_jsd": 1.0, "n": 1})


def _scored_run():
    """Rows of C2-Q1 (two questions, three countries), predictions and the summary a run hands its W&B logging."""
    from simlab.analysis.position_bias import position_bias
    from simlab.data.rows import SurveyRow
    from simlab.metrics.scoring import score_subsets
    from simlab.runs.metrics_file import summarize

    human = {"1": ([0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]), "2": ([0.5, 0.5, 0.0], [0.9, 0.05, 0.05],
                                                                            [0.3, 0.3, 0.4])}
    rows, predicted = [], []
    for question, shares in human.items():
        for i, (country, target) in enumerate(zip(("Chile", "Japan", "Kenya"), shares)):
            rows.append(SurveyRow("C2-Q1", question, country, "", f"question {question}",
                                  ("(A)a", "(B)b", "(C)c"), ("A", "B", "C"), tuple(target), None, "f", len(rows)))
            predicted.append([0.5 - 0.1 * i, 0.3, 0.2 + 0.1 * i])
    rows, predictions = {"C2-Q1": rows}, {"C2-Q1": predicted}
    summary = summarize(score_subsets(rows, predictions), [], task="zeroshot", model="tiny")
    summary["position_bias"] = {"C2-Q1": position_bias([r.target for r in rows["C2-Q1"]], predicted)}
    return rows, predictions, summary


def test_a_runs_wandb_figures_are_the_reports_drawn_from_the_results_in_hand(tmp_path, monkeypatch):
    """The figures a W&B run logs come from the summary and predictions handed over (nothing is read back from a
    folder) and are the report's own figures, byte for byte, for the same run."""
    from simlab.report.build import write_report
    from simlab.report.wandb_logging import run_figures
    from simlab.runs.predictions import prediction_records
    from simlab.runs.rundir import RunDir

    rows, predictions, summary = _scored_run()
    run = RunDir(tmp_path / "tiny")  # the folder's name is the report's label when one job is reported
    run.path.mkdir()
    run.write_predictions(rows, predictions)
    run.write_metrics(summary)
    run.write_status("completed", [])
    write_report(collect_jobs([run.path]), tmp_path / "report", subset="C2-Q1")

    def no_reading(*args, **kwargs):
        raise AssertionError("the W&B figures read a run folder")

    for method in ("read_metrics", "read_predictions", "iter_predictions", "read_status"):
        monkeypatch.setattr(RunDir, method, no_reading)
    records = list(prediction_records(rows, predictions))
    made = run_figures(summary, records, tmp_path / "figures", "tiny")
    assert [p.name for p in made] == ["one_minus_jsd_by_subset.png", "accuracy_by_subset.png",
                                      "diversity_C2-Q1.png", "position_bias_C2-Q1.png"]
    for path in made:
        assert path.read_bytes() == (tmp_path / "report" / path.name).read_bytes(), path.name
    assert run_figures({"task": "simulate"}, [], tmp_path / "none", "x") == []  # nothing scored, nothing drawn


def test_log_run_logs_what_it_is_handed_and_only_a_trained_adapter(tmp_path):
    from simlab.report.wandb_logging import log_run

    class Experiment:
        def __init__(self):
            self.logged, self.artifacts = [], []

        def log(self, payload):
            self.logged.append(payload)

        def log_artifact(self, artifact):
            self.artifacts.append(artifact)

    rows, predictions, summary = _scored_run()
    (tmp_path / "run").mkdir()
    evaluated = Experiment()
    log_run(evaluated, summary, rows, predictions, figures_dir=tmp_path / "run" / "figures", adapter=None)
    (payload,) = evaluated.logged
    assert {"results", "predictions", "figures/one_minus_jsd_by_subset", "figures/position_bias_C2-Q1"} <= set(payload)
    assert payload["predictions"].data[0][:3] == ["C2-Q1", "Chile", "1"] and evaluated.artifacts == []
    assert not (tmp_path / "run" / "metrics.json").exists()  # nothing was written or read there but the figures
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    trained = Experiment()
    log_run(trained, summary, rows, predictions, figures_dir=tmp_path / "run" / "figures", adapter=str(adapter))
    (artifact,) = trained.artifacts
    assert artifact.type == "model" and artifact.name == "adapter-tiny" and artifact.metadata["model"] == "tiny"


def test_the_long_csv_escapes_labels_a_spreadsheet_would_run(tmp_path):
    """A row labelled by a ``+key=value`` override (Hydra's append syntax) is text in a spreadsheet, not a formula."""
    import csv

    from simlab.report.collect import Job
    from simlab.report.tables import write_long_csv

    metrics = {"subsets": {"C1-Q3": {"one_minus_jsd": 0.8}}, "paper_average": {"one_minus_jsd": 0.8}}
    jobs = [Job(tmp_path / "a", "completed", {}, metrics, label="+trainer.max_steps=5"),
            Job(tmp_path / "b", "failed", {}, None, label="=cmd()")]
    write_long_csv(jobs, tmp_path / "long.csv", metrics=["one_minus_jsd"])
    rows = list(csv.DictReader(open(tmp_path / "long.csv", encoding="utf-8")))
    assert [r["row"] for r in rows] == ["'+trainer.max_steps=5", "'+trainer.max_steps=5", "'=cmd()"]
    assert [r["value"] for r in rows[:2]] == ["0.8", "0.8"]
