"""The tasks in-process: a config composed with Hydra's compose API (as run.py composes it), the task function
called directly, and the wrapper's status.json on tasks that finish, fail, are interrupted or find no model."""

import json
import signal

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

from simlab.runs.metrics_file import RunMetrics
from simlab.runs.rundir import RunDir
from simlab.runs.status import RunDirError
from simlab.tasks import run_task, task_wrapper

TASKS = sorted(p.stem for p in (REPO / "conf" / "task").glob("*.yaml"))


@pytest.fixture
def job():
    """compose(*overrides, out=folder): the job's config, with Hydra's own config set as in a run."""

    def make(*overrides: str, out):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[*overrides, f"paths.output_dir={out}"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]  # a task gets the job's config without Hydra's node, as under @hydra.main
        return cfg

    yield make
    HydraConfig.instance().cfg = None


@pytest.mark.parametrize("task", TASKS)
def test_every_task_config_names_its_function(task, job, tmp_path):
    cfg = job(f"task={task}", out=tmp_path)
    function = instantiate(cfg.task.run)
    assert callable(function) and function.func.__module__.startswith("simlab.tasks.")
    assert cfg.task.name and isinstance(cfg.task.fit, bool) and isinstance(cfg.task.calibrates, bool)
    assert cfg.task.calibrates == (task != "baseline")  # a baseline's shares have no temperature


def test_shared_code_asks_tasks_what_they_are_not_their_names():
    """What a task is comes from its config (task.fit, task.calibrates) or from what a run recorded
    (RunMetrics.is_baseline): no task name compared as a string anywhere in the package."""
    import re

    compared = re.compile(r"""(task\.name|get\(["']task["']\)|\[["']task["']\])\s*(==|!=|\bin\b)""")
    found = [f"{p.relative_to(REPO)}:{n}" for p in sorted((REPO / "simlab").rglob("*.py"))
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if compared.search(line)]
    assert found == []


def test_what_a_run_was_is_read_from_what_it_recorded():
    from simlab.runs.metrics_file import RunMetrics

    model = RunMetrics.from_dict({"task": "zeroshot", "model": "m", "subsets": {}})
    uniform = RunMetrics.from_dict({"task": "baseline", "baseline": "uniform", "subsets": {}})
    json_zs = RunMetrics.from_dict({"task": "baseline", "baseline": "json_zs", "model": "m", "subsets": {}})
    outside_hydra = RunMetrics.from_dict({"baseline": None, "subsets": {}})  # job_choice is None outside Hydra
    assert [m.is_baseline for m in (model, uniform, json_zs, outside_hydra)] == [False, True, True, True]
    assert [m.answers_from_model for m in (model, uniform, json_zs, outside_hydra)] == [True, False, True, False]


def test_baseline_task_in_process(job, tmp_path, shared_data):
    from simlab.tasks.baseline import baseline

    out = tmp_path / "avg"
    cfg = job("task=baseline", "baseline=avg_culture", "logger=none", f"data.root={shared_data}",
              "data.limit_per_subset=8", out=out)
    summary = baseline(cfg)
    run = RunDir(out)
    metrics = run.read_metrics()
    assert metrics == json.loads(json.dumps(summary)) and list(metrics) == list(summary)
    assert metrics["task"] == "baseline" and metrics["baseline"] == "avg_culture"
    assert metrics["overrides"] == ["task=baseline", "baseline=avg_culture", "logger=none", f"data.root={shared_data}",
                                    "data.limit_per_subset=8", f"paths.output_dir={out}"]
    schema = RunMetrics.keys()
    assert [k for k in schema if k in metrics] == list(metrics)  # the schema's order, nothing it does not know
    records = run.read_predictions()
    assert len(records) == sum(v["n"] for v in metrics["subsets"].values())
    assert "# baseline: avg_culture" in run.results_file.read_text()
    assert run.read_status() is None  # status.json is the wrapper's


def test_run_task_claims_the_folder_and_records_completion(job, tmp_path, shared_data):
    out = tmp_path / "uniform"
    cfg = job("task=baseline", "baseline=uniform", "logger=none", f"data.root={shared_data}",
              "data.limit_per_subset=4", out=out)
    summary = run_task(cfg)
    run = RunDir(out)
    assert run.read_status()["status"] == "completed" and summary["baseline"] == "uniform"
    assert run.read_config()["task"]["run"]["_target_"] == "simlab.tasks.baseline.baseline"
    with pytest.raises(RunDirError, match="already holds another run's outputs"):
        run_task(cfg)
    assert run.read_status()["status"] == "completed"  # the refused run left the record alone


def test_the_wrapper_writes_running_first_and_the_outcome_last(job, tmp_path):
    cfg = job("task=zeroshot", "logger=none", out=tmp_path)
    seen = []

    @task_wrapper
    def task(cfg):
        seen.append(RunDir(tmp_path).read_status()["status"])
        return {"done": True}

    assert task(cfg) == {"done": True}
    assert seen == ["running"]
    record = RunDir(tmp_path).read_status()
    assert record["status"] == "completed" and record["overrides"] == ["task=zeroshot", "logger=none",
                                                                       f"paths.output_dir={tmp_path}"]
    assert RunDir(tmp_path).config_file.is_file()


def test_a_failing_task_is_recorded_and_re_raised(job, tmp_path):
    cfg = job("task=zeroshot", "logger=none", out=tmp_path)

    @task_wrapper
    def task(cfg):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        task(cfg)
    record = RunDir(tmp_path).read_status()
    assert record["status"] == "failed" and record["error"] == "RuntimeError: boom"
    assert "Traceback (most recent call last)" in record["traceback"]


def test_an_interrupted_task_exits_128_plus_the_signal_with_the_resume_command(job, tmp_path):
    from simlab.runs.interrupt import RunInterrupted

    cfg = job("task=finetune", "logger=none", out=tmp_path)
    checkpoint = str(RunDir(tmp_path).last_checkpoint)

    @task_wrapper
    def task(cfg):
        raise RunInterrupted(signal.SIGTERM, checkpoint=checkpoint, step=3)

    with pytest.raises(SystemExit) as stopped:
        task(cfg)
    assert stopped.value.code == 128 + signal.SIGTERM
    record = RunDir(tmp_path).read_status()
    assert record["status"] == "interrupted" and record["signal"] == "SIGTERM" and record["step"] == 3
    assert record["checkpoint"] == checkpoint
    assert record["resume_command"].startswith("python run.py task=finetune logger=none")
    assert record["resume_command"].endswith(f"resume={tmp_path}")


@pytest.mark.parametrize("multirun", [True, False])
def test_a_missing_model_skips_a_sweep_job_and_fails_a_single_run(job, tmp_path, monkeypatch, multirun):
    from simlab.model import ModelNotAvailable
    from simlab.tasks import wrapper

    monkeypatch.setattr(wrapper, "is_multirun", lambda: multirun)
    cfg = job("task=zeroshot", "logger=none", out=tmp_path)

    @task_wrapper
    def task(cfg):
        try:
            raise ModelNotAvailable("no weights for x")
        except ModelNotAvailable as err:  # instantiate() wraps the loader's error
            raise RuntimeError("instantiate failed") from err

    if multirun:
        assert task(cfg) is None
        record = RunDir(tmp_path).read_status()
        assert record["status"] == "skipped" and record["reason"] == "no weights for x"
    else:
        with pytest.raises(RuntimeError):
            task(cfg)
        assert RunDir(tmp_path).read_status()["status"] == "failed"


def test_resume_is_refused_before_the_folder_is_touched(job, tmp_path):
    from simlab.tasks.wrapper import prepare_resume

    cfg = job("task=zeroshot", "logger=none", f"resume={tmp_path}", out=tmp_path)
    with pytest.raises(RunDirError, match="only fine-tuning resumes"):
        run_task(cfg)
    assert not RunDir(tmp_path).status_file.exists()

    cfg = job("task=finetune", "logger=none", f"resume={tmp_path}", out=tmp_path)
    with pytest.raises(RunDirError, match="no config_resolved.yaml there"):
        prepare_resume(cfg, RunDir(tmp_path))
    original = job("task=finetune", "logger=none", "data.batch_size=2", out=tmp_path)
    from omegaconf import OmegaConf

    with open_dict(original):
        del original.task["run"]  # a run from before tasks were named in the config resumes all the same
        del original.task["calibrates"]  # and from before tasks said whether they calibrate
    RunDir(tmp_path).write_config(OmegaConf.to_yaml(original, resolve=True))
    with pytest.raises(RunDirError, match=r"data.batch_size: 2 -> "):
        prepare_resume(cfg, RunDir(tmp_path))
    cfg = job("task=finetune", "logger=none", "data.batch_size=2", f"resume={tmp_path}", out=tmp_path)
    with pytest.raises(RunDirError, match="no checkpoints/last.ckpt"):
        prepare_resume(cfg, RunDir(tmp_path))
    RunDir(tmp_path).last_checkpoint.parent.mkdir()
    RunDir(tmp_path).last_checkpoint.write_bytes(b"")
    prepare_resume(cfg, RunDir(tmp_path))
    assert cfg.ckpt_path == str(RunDir(tmp_path).last_checkpoint)
