"""Run folders: atomic writes that survive kill -9, claiming a folder, unique folders, and what run.py records."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, auto_precision

from simlab.common.files import atomic_writer, write_json
from simlab.runs.status import RunDirError, claim, read_status, unique_run_dir, write_status


def test_kill_9_in_the_middle_of_a_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"old": True})
    script = textwrap.dedent(f"""
        import os, signal
        from simlab.common.files import atomic_writer
        with atomic_writer({str(target)!r}) as handle:
            handle.write('{{"new": ')
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO)
    assert result.returncode == -signal.SIGKILL
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir() if p.name != "metrics.json"][0].endswith(".tmp")  # the orphan


def test_an_error_inside_the_writer_keeps_the_old_file_and_cleans_up(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_writer(target) as handle:
            handle.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_claiming_a_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".hydra").mkdir()  # Hydra's own files do not make a folder taken
    assert claim(out) is None
    write_status(out, "completed", ["task=finetune"])
    (out / "adapter").mkdir()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(RunDirError, match=r"already holds another run's outputs \(completed: status.json, "
                                          r"metrics.json, adapter\).*resume=.*overwrite=true"):
        claim(out)
    with pytest.raises(RunDirError, match="already completed; nothing to resume"):
        claim(out, resume=True)
    assert claim(out, overwrite=True)["status"] == "completed"
    assert sorted(p.name for p in out.iterdir()) == [".hydra"]  # nothing of the old run is left beside the new one


def test_a_live_run_is_never_taken_over(tmp_path):
    write_status(tmp_path, "running", [])  # this test's own (live) pid
    assert read_status(tmp_path)["dead"] is False
    for kwargs in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(RunDirError, match="still running"):
            claim(tmp_path, **kwargs)
    record = json.loads((tmp_path / "status.json").read_text())
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record["pid"] = int(gone.stdout)
    (tmp_path / "status.json").write_text(json.dumps(record))
    assert read_status(tmp_path)["dead"] is True
    assert claim(tmp_path, resume=True)["status"] == "running"  # a dead run can be resumed


def test_default_folders_differ_within_one_second():
    folders = {unique_run_dir(None, "outputs/baseline") for _ in range(50)}
    assert len(folders) == 50 and all(f.startswith("outputs/baseline/") for f in folders)
    assert unique_run_dir("outputs/x/run1", "outputs/baseline") == "outputs/x/run1"


def test_two_runs_started_together_get_two_folders_and_a_reused_folder_is_refused(tmp_path, shared_data):
    base = ["task=baseline", "logger=none", f"data.root={shared_data}", "data.limit_per_subset=8",
            f"hydra.run.dir=${{simlab.run_dir:null,{tmp_path}}}"]
    runs = [subprocess.Popen([sys.executable, "run.py", *base, f"baseline={b}"], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for b in ("uniform", "avg_culture")]
    outputs = [p.communicate(timeout=600)[0] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outputs
    folders = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(folders) == 2
    assert {json.loads((f / "metrics.json").read_text())["baseline"] for f in folders} == {"uniform", "avg_culture"}
    assert all(read_status(f)["status"] == "completed" for f in folders)

    again = subprocess.run([sys.executable, "run.py", *base[:-1], "baseline=uniform", f"hydra.run.dir={folders[0]}"],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 1 and "already holds another run's outputs" in again.stderr
    assert read_status(folders[0])["status"] == "completed"  # the other run's record is untouched


def test_a_failed_run_logs_its_error_and_traceback_to_run_log(tmp_path, tiny_llama_dir, shared_data):
    result = subprocess.run(
        [sys.executable, "run.py", "model=hf", f"model.path={tiny_llama_dir}", "task=zeroshot", "logger=none",
         f"data.root={shared_data}", "data.limit_per_subset=4", "data.max_length=8", f"hydra.run.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 1
    log = (tmp_path / "run.log").read_text()
    assert "run failed: PromptTooLongError" in log and "Traceback (most recent call last)" in log
    assert read_status(tmp_path)["status"] == "failed"


def test_precision_auto_follows_the_cpus_measured_speed(monkeypatch):
    from simlab.training import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    chosen, why = precision.resolve_precision("auto", "cpu")
    assert chosen == "32-true" and "no native bf16" in why
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision, "bf16_cpu_speeds", lambda: (400.0, 200.0))  # an AMX CPU: bf16 2x float32
    chosen, why = precision.resolve_precision("auto", "cpu")
    assert chosen == "bf16-mixed" and "400 GFLOP/s against 200 in float32" in why
    monkeypatch.setattr(precision, "bf16_cpu_speeds", lambda: (155.0, 263.0))  # AVX512-BF16 without AMX
    chosen, why = precision.resolve_precision("auto", "cpu")
    assert chosen == "32-true" and "not faster than float32" in why
    monkeypatch.setattr(precision, "bf16_cpu_speeds", lambda: (300.0, 263.0))  # within the margin: float32
    assert precision.resolve_precision("auto", "cpu")[0] == "32-true"
    assert precision.resolve_precision("32-true", "cpu") == ("32-true", "set in the trainer config")


def test_matmul_speed_is_measured():
    import torch

    from simlab.training.precision import matmul_gflops

    state = torch.get_rng_state()
    assert matmul_gflops(torch.float32, size=64, tokens=32, repeats=2) > 0
    assert torch.equal(torch.get_rng_state(), state)  # the global generator untouched: no run depends on measuring


def test_bf16_and_float32_are_timed_in_turns(monkeypatch):
    """A burst of other work during the probe slows both dtypes alike: their matmuls alternate."""
    import torch

    from simlab.training import precision

    order, mm = [], torch.mm
    monkeypatch.setattr(torch, "mm", lambda x, y: order.append(x.dtype) or mm(x, y))
    state = torch.get_rng_state()
    bf16, fp32 = precision.bf16_cpu_speeds(repeats=3)
    assert bf16 > 0 and fp32 > 0 and torch.equal(torch.get_rng_state(), state)
    assert order == [torch.bfloat16, torch.float32] * 4  # an untimed round, then three timed ones


def test_precision_choice_is_logged(tmp_path, tiny_llama_dir, shared_data):
    result = subprocess.run(
        [sys.executable, "run.py", "model=hf", f"model.path={tiny_llama_dir}", "task=zeroshot", "logger=none",
         f"data.root={shared_data}", "data.limit_per_subset=2", "data.max_length=2048", "data.test_subsets=[C1-Q2]",
         f"hydra.run.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=auto_precision({**os.environ, "OMP_NUM_THREADS": "1"}),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    said = next(line for line in (tmp_path / "run.log").read_text().splitlines() if "] - precision " in line)
    assert "no native bf16" in said or "a bf16 matmul ran at" in said, said  # auto: measured, and why


def test_metrics_schema_round_trips_and_keeps_key_order():
    from simlab.runs.metrics_file import UNSET, RunMetrics

    written = {"task": "zeroshot", "model": "m", "adapter": None, "subsets": {"C2-Q1": {"n": 3, "emd": 0.1}},
               "paper_average": None, "rows": {"C2-Q1": 3}, "limit_eval_per_subset": 3, "something_new": [1]}
    metrics = RunMetrics.from_dict(written)
    assert metrics.to_dict() == written and list(metrics.to_dict()) == list(written)
    assert metrics.adapter is None and metrics.loss is UNSET and metrics.extra == {"something_new": [1]}
    fresh = RunMetrics(subsets={}, task="baseline", baseline="uniform", rows={})
    assert list(fresh.to_dict()) == ["task", "baseline", "rows", "subsets"]  # the order a run writes
    with pytest.raises(ValueError, match="subsets"):
        RunMetrics.from_dict({"subsets": {"C2-Q1": 0.5}})


def test_reanalyse_recomputes_the_schema_keys_marked_recomputed():
    from simlab.analysis.reanalyse import RECOMPUTED
    from simlab.runs.metrics_file import RunMetrics

    assert set(RECOMPUTED) == {"subsets", "paper_average", "paper_average_subsets", "paper_average_missing",
                               "position_bias", "noise_ceiling", "effective_respondents", "calibrated", "rows"}
    assert set(RECOMPUTED) < set(RunMetrics.keys())


def test_job_folder_names_and_report_labels_ignore_the_same_overrides():
    import yaml

    from simlab.report.collect import IGNORED_KEYS

    hydra = yaml.safe_load((REPO / "conf" / "hydra" / "default.yaml").read_text())
    assert set(hydra["job"]["config"]["override_dirname"]["exclude_keys"]) == IGNORED_KEYS
    assert "logger" in IGNORED_KEYS  # a job folder is never named 0_logger=wandb,method=ft


def test_every_run_file_name_is_the_run_dirs(tmp_path):
    from simlab.runs.rundir import RunDir

    run = RunDir(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in (
        run.config_file, run.metrics_file, run.predictions_file, run.results_file, run.status_file, run.log_file,
        run.adapter_dir, run.last_checkpoint)] == [
        "config_resolved.yaml", "metrics.json", "predictions.jsonl", "results.md", "status.json", "run.log",
        "adapter", "checkpoints/last.ckpt"]
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        run.read_metrics()
    run.write_metrics({"task": "t", "subsets": {}})
    assert run.read_metrics() == {"task": "t", "subsets": {}} and run.is_run()


def test_metrics_json_is_read_and_written_through_its_owner():
    """metrics.json has one owner (RunDir.read_metrics / write_metrics, schema RunMetrics): no module opens it."""
    import re
    from pathlib import Path

    import simlab

    package = Path(simlab.__file__).parent
    owner = {"runs/rundir.py", "runs/names.py"}
    direct = re.compile(r"METRICS_FILE|metrics_file\.(read_|open|write_)|[\"']metrics\.json[\"']\)?\.(read|open)")
    offenders = [p.relative_to(package).as_posix() for p in package.rglob("*.py")
                 if p.relative_to(package).as_posix() not in owner and direct.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
