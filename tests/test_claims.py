"""Claiming a run folder: one winner when runs race, nothing touched in a refused folder, a lost host's run resumable
on request, outputs readable as the umask says."""

import json
import multiprocessing
import os
import stat
import subprocess
import sys

import pytest
from conftest import REPO

from simlab.common.files import write_json
from simlab.runs.status import RunDirError, claim, read_status, write_status


def _claim_at_once(out, barrier, results):
    barrier.wait()
    try:
        claim(out, overrides=[], started="now")
        results.put("won")
    except RunDirError:
        results.put("refused")


def test_runs_racing_for_one_empty_folder_have_one_winner(tmp_path):
    context = multiprocessing.get_context("fork")
    for attempt in range(5):
        out = tmp_path / f"run{attempt}"
        out.mkdir()
        barrier, results = context.Barrier(4), context.Queue()
        workers = [context.Process(target=_claim_at_once, args=(out, barrier, results)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        outcomes = sorted(results.get(timeout=5) for _ in workers)
        assert outcomes == ["refused", "refused", "refused", "won"], f"attempt {attempt}: {outcomes}"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_are_as_readable_as_the_umask_says(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = write_json(tmp_path / "metrics.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_run_on_a_lost_host_resumes_only_when_forced(tmp_path):
    write_status(tmp_path, "running", ["x=1"])
    record = json.loads((tmp_path / "status.json").read_text())
    (tmp_path / "status.json").write_text(json.dumps({**record, "host": "a-node-that-is-gone"}))
    assert read_status(tmp_path).get("dead") is False  # another host: simlab cannot tell
    with pytest.raises(RunDirError, match=r"still running .*a-node-that-is-gone.*resume_force=true"):
        claim(tmp_path, resume=True)
    with pytest.raises(RunDirError, match="still running"):
        claim(tmp_path, force=True)  # forcing is for resuming only, never for overwriting a live run
    assert claim(tmp_path, resume=True, force=True)["host"] == "a-node-that-is-gone"


def test_a_run_on_this_host_that_is_alive_is_never_forced(tmp_path):
    write_status(tmp_path, "running", [])  # this test's own, live pid
    with pytest.raises(RunDirError, match="wait for it or stop it first"):
        claim(tmp_path, resume=True, force=True)


def _run_py(*overrides):
    return subprocess.run([sys.executable, "run.py", *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_a_refused_run_touches_nothing_in_the_folder(tmp_path):
    out = tmp_path / "done"
    (out / ".hydra").mkdir(parents=True)
    files = {".hydra/config.yaml": "the finished run's config\n", ".hydra/overrides.yaml": "- its=overrides\n",
             "run.log": "its log\n", "metrics.json": "{}\n"}
    for name, text in files.items():
        (out / name).write_text(text)
    write_status(out, "completed", ["its=overrides"])
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = _run_py("task=baseline", "baseline=uniform", "logger=none", f"hydra.run.dir={out}")
    assert result.returncode == 1 and "already holds another run's outputs" in result.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_resuming_a_folder_that_does_not_exist_creates_nothing(tmp_path):
    missing = tmp_path / "no" / "such" / "run"
    result = _run_py("experiment=smoke", "logger=none", f"resume={missing}")
    assert result.returncode == 1 and f"resume={missing}: no such run folder" in result.stderr
    assert not (tmp_path / "no").exists()


def test_sweep_job_folders_stay_inside_the_sweep_folder(tmp_path):
    from simlab.runs.status import safe_dirname

    assert safe_dirname("+note=a/../../X") == "+note=a_______X"
    assert safe_dirname("ckpt_path=ck/a.ckpt") == "ckpt_path=ck_a.ckpt"
    assert safe_dirname("..") == "__" and safe_dirname("method=ft_js,loss=kl") == "method=ft_js,loss=kl"
    long = safe_dirname("x=" + "a" * 400)
    assert len(long) == 150 and long != safe_dirname("x=" + "a" * 399 + "b")
    sweep = tmp_path / "sweep"
    result = _run_py("-m", "task=baseline", "baseline=uniform", "logger=none", "data.limit_per_subset=4",
                     "+note=a/../../escaped,ck/b", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-2000:]
    rest = ",baseline=uniform,data.limit_per_subset=4,task=baseline"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [f"0_+note=a_______escaped{rest}",
                                                                      f"1_+note=ck_b{rest}"]
    assert not (tmp_path / "escaped").exists()


def test_a_run_folder_whose_config_names_foreign_code_is_refused_before_anything_runs(tmp_path):
    from simlab.runs.rundir import RunDir
    from simlab.simulate import Simulator

    marker = tmp_path / "ran"
    (tmp_path / "config_resolved.yaml").write_text(
        "model:\n  loader:\n    _target_: subprocess.check_call\n    args: [touch, " + str(marker) + "]\n"
        "  adapter: null\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"model.loader._target_ = 'subprocess.check_call' is not one of simlab's"):
        Simulator.from_run(tmp_path)
    with pytest.raises(ValueError, match="refused"):
        RunDir(tmp_path).read_config()
    assert not marker.exists()


def test_every_target_simlabs_configs_name_is_trusted():
    import yaml

    from simlab.runs.rundir import TRUSTED_TARGETS, targets

    found = [t for path in (REPO / "conf").rglob("*.yaml")
             for _, t in targets(yaml.safe_load(path.read_text(encoding="utf-8")) or {})]
    assert found and all(t.startswith(TRUSTED_TARGETS) for t in found), [t for t in found
                                                                           if not t.startswith(TRUSTED_TARGETS)]


def test_a_fine_tune_that_took_no_step_fails_and_saves_no_adapter(tmp_path, tiny_llama_dir):
    out = tmp_path / "run"
    result = _run_py("model=hf", f"model.path={tiny_llama_dir}", "logger=none", "data.limit_per_subset=4",
                     "trainer.max_epochs=0", f"hydra.run.dir={out}")
    assert result.returncode == 1 and "the fine-tune took no optimizer step (trainer.max_epochs=0" in result.stderr
    assert read_status(out)["status"] == "failed" and not (out / "adapter").exists()


def test_a_run_that_would_score_no_subset_fails(tmp_path):
    out = tmp_path / "run"
    result = _run_py("task=baseline", "baseline=uniform", "logger=none", "data.test_subsets=[]", f"hydra.run.dir={out}")
    assert result.returncode == 1 and "data.test_subsets is empty" in result.stderr
    assert result.stderr.strip().splitlines() == [  # one line, the traceback in run.log
        next(line for line in result.stderr.splitlines() if line.startswith("ValueError: data.test_subsets is empty"))]
    assert "Traceback (most recent call last)" in (out / "run.log").read_text()
    assert read_status(out)["status"] == "failed" and not (out / "metrics.json").exists()


def test_the_report_counts_every_status_and_names_an_unreadable_file(tmp_path):
    from simlab.report.build import write_report
    from simlab.report.collect import collect_jobs

    for name, status in (("a", "failed"), ("b", "interrupted"), ("c", "completed")):
        write_status(tmp_path / name, status, [f"x={name}"])
    (tmp_path / "c" / "metrics.json").write_text('{"subsets": {"C1-Q2": {"one_minus', encoding="utf-8")  # truncated
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "status.json").write_text('{"status": "compl', encoding="utf-8")
    jobs = {j.path.name: j for j in collect_jobs([tmp_path])}
    assert jobs["c"].status == "unreadable" and "c/metrics.json: not a readable metrics file" in jobs["c"].reason
    assert jobs["d"].status == "unreadable" and "d/status.json" in jobs["d"].reason
    report = write_report(list(jobs.values()), tmp_path / "report")
    headline = next(line for line in report.read_text().splitlines() if " jobs: " in line)
    assert headline == "4 jobs: 1 failed, 1 interrupted, 2 unreadable"
