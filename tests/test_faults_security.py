"""The security and integrity section of `make faults`, its model-free cases run for real (a crafted checkpoint, a
config naming foreign code, a refused run into a completed folder, a run with no test subset, a claim race,
overwrite=true with missing inputs), so the section cannot rot; a crafted checkpoint as ckpt_path= on a tiny model;
file-level checks of overwrite validation and of resuming a moved run folder."""

import re

import pytest
from omegaconf import OmegaConf

from simlab.devtools.faults_security import security
from simlab.runs.status import config_differences, relocate


def test_the_security_section_passes_without_a_model(tmp_path):
    outcomes = security(tmp_path, model_free=True)
    failed = [f"{o.fault}: {o.observed}" for o in outcomes if not o.passed]
    assert not failed, failed
    rows = " ".join(o.fault for o in outcomes)
    for case in ("adapter-from-ckpt", "subprocess.check_call", "completed run's folder", "test_subsets=[]",
                 "same instant", "overwrite=true data.root", "overwrite=true model.path"):
        assert case in rows, case


def test_the_planted_checkpoint_payload_is_live_and_weights_only_refuses_it(tmp_path):
    """The pickle row cannot pass on an inert plant: unpickled the unsafe way, the payload runs."""
    import torch

    from simlab.devtools import faults_security

    evil = tmp_path / "x.ckpt"
    marker = tmp_path / "ran"
    torch.save({"payload": faults_security._RunsCommand(marker)}, evil)
    torch.load(evil, weights_only=False)
    assert marker.exists()  # the planted payload is live
    with pytest.raises(Exception, match="Unsupported global|weights_only"):
        torch.load(evil, weights_only=True)
    from simlab.simulator.checkpoints import load_checkpoint_weights

    with pytest.raises(ValueError, match=r"x.ckpt: not a checkpoint simlab can read safely: it names code to run"):
        load_checkpoint_weights(evil)


def test_a_crafted_checkpoint_as_ckpt_path_is_one_line_and_runs_nothing(tmp_path, tiny_llama_dir):
    import subprocess
    import sys

    import torch
    from conftest import REPO

    from simlab.devtools import faults_security

    marker, evil = tmp_path / "ran", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": faults_security._RunsCommand(marker)}, evil)
    result = subprocess.run([sys.executable, "run.py", "model=hf", f"model.path={tiny_llama_dir}", "logger=none",
                             "data.limit_per_subset=4", f"ckpt_path={evil}", f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and not marker.exists()
    assert result.stderr.strip().splitlines()[-1].startswith(f"ValueError: ckpt_path={evil}: not a checkpoint simlab "
                                                             f"can read safely: it names code to run on loading")


def _config(out: str, **extra) -> dict:
    return {"paths": {"output_dir": out, "wandb_search": ["outputs", "multirun"]},
            "data": {"invalid_rows_file": f"{out}/invalid_rows.jsonl", "batch_size": 4},
            "trainer": {"default_root_dir": out},
            "callbacks": {"checkpoint": {"dirpath": f"{out}/checkpoints"}}, **extra}


def test_a_moved_run_folder_differs_only_by_its_location(tmp_path):
    import yaml

    old, new = "/old/place/run", str(tmp_path / "run")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config_resolved.yaml").write_text(yaml.safe_dump(_config(old)), encoding="utf-8")
    saved = yaml.safe_load((tmp_path / "run" / "config_resolved.yaml").read_text(encoding="utf-8"))
    asked = _config(new)
    assert config_differences(saved, asked)  # without the move every own path differs
    assert config_differences(saved, asked, moved=(old, new)) == []
    # a real difference still counts, and a path that merely starts like the old folder is not moved
    asked["data"]["batch_size"] = 8
    saved["data"]["prior_file"] = asked["data"]["prior_file"] = "/old/place/run2/x"
    assert config_differences(saved, asked, moved=(old, new)) == ["data.batch_size: 4 -> 8"]
    assert relocate({"a": ["/old/place/run/x", "/old/place/runx"]}, old, new) == {
        "a": [f"{new}/x", "/old/place/runx"]}


def test_resume_accepts_a_moved_folder_and_refuses_another_config(tmp_path):
    import yaml

    from simlab.runs.rundir import RunDir
    from simlab.runs.status import RunDirError
    from simlab.tasks.wrapper import prepare_resume

    run = RunDir(tmp_path / "moved")
    (run.checkpoint_dir).mkdir(parents=True)
    run.last_checkpoint.write_bytes(b"")
    task = {"name": "finetune", "fit": True}
    run.config_file.write_text(yaml.safe_dump(_config("/old/place/run", task=task, resume=None, ckpt_path=None)))
    asked = OmegaConf.create(_config(str(run.path), task=task, resume=str(run.path), ckpt_path=None))
    prepare_resume(asked, run)
    assert asked.ckpt_path == str(run.last_checkpoint)
    asked = OmegaConf.create(_config(str(run.path), task=task, resume=str(run.path), ckpt_path=None))
    asked.data.batch_size = 8
    with pytest.raises(RunDirError, match=r"data.batch_size: 4 -> 8\)"):
        prepare_resume(asked, run)


def test_a_moved_folders_best_checkpoint_keeps_its_score(tmp_path):
    import torch

    from simlab.training.callbacks import AtomicModelCheckpoint

    old = "/old/place/run/checkpoints"
    new = tmp_path / "checkpoints"
    new.mkdir()
    (new / "best-step3.ckpt").write_bytes(b"")
    state = {"dirpath": old, "best_model_path": f"{old}/best-step3.ckpt", "best_model_score": torch.tensor(0.7),
             "kth_best_model_path": f"{old}/best-step3.ckpt", "kth_value": torch.tensor(0.7),
             "best_k_models": {f"{old}/best-step3.ckpt": torch.tensor(0.7)}, "last_model_path": "",
             "monitor": "val/one_minus_jsd"}
    moved = AtomicModelCheckpoint(dirpath=str(new), monitor="val/one_minus_jsd", mode="max")
    moved.load_state_dict(dict(state))
    assert moved.best_model_path == str(new / "best-step3.ckpt") and float(moved.best_model_score) == pytest.approx(0.7)
    assert list(moved.best_k_models) == [str(new / "best-step3.ckpt")]
    elsewhere = AtomicModelCheckpoint(dirpath=str(tmp_path / "fresh"), monitor="val/one_minus_jsd", mode="max")
    elsewhere.load_state_dict(dict(state))  # ckpt_path= from another folder: Lightning's own behaviour
    assert elsewhere.best_model_score is None and elsewhere.best_k_models == {}


def _run_cfg(tmp_path, **data):
    return OmegaConf.create({"overwrite": True, "resume": None, "ckpt_path": None, "task": {"name": "baseline"},
                             "baseline": {"_target_": "simlab.baselines.UniformBaseline"},
                             "model": {"adapter": None, "loader": {"path": None}},
                             "data": {"root": None, "files": ["wvs7/sft_wvs_valid.json"], **data}})


@pytest.mark.parametrize(("change", "error"), [
    ({"root": "/nonexistent/data"}, "survey data root /nonexistent/data (from data.root) does not exist"),
    ({"root": "FILE"}, "is a file, not a folder"),
    ({"files": ["wvs7/no_such_file.json"]}, "data files not found under"),
])
def test_overwrite_checks_the_new_runs_inputs_before_deleting_anything(tmp_path, change, error):
    from simlab.runs.status import write_status
    from simlab.tasks.inputs import check_before_overwrite

    out = tmp_path / "old"
    out.mkdir()
    write_status(out, "completed", [])
    (out / "metrics.json").write_text("{}")
    if change.get("root") == "FILE":
        (tmp_path / "file").write_text("x")
        change = {"root": str(tmp_path / "file")}
    check_before_overwrite(_run_cfg(tmp_path), out)  # good inputs: nothing raised
    with pytest.raises((FileNotFoundError, NotADirectoryError),
                       match=f"overwrite=true: nothing deleted in {re.escape(str(out))}.*{re.escape(error)}"):
        check_before_overwrite(_run_cfg(tmp_path, **change), out)
    model = _run_cfg(tmp_path)
    model.task.name, model.model.loader.path = "zeroshot", str(tmp_path / "no-model")
    with pytest.raises(FileNotFoundError, match="model.path .*no-model does not exist"):
        check_before_overwrite(model, out)
    model.model.path, model.model.loader.path = "???", "${model.path}"  # model=hf without model.path=
    with pytest.raises(ValueError, match="model.path is not set"):
        check_before_overwrite(model, out)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "status.json"]
    check_before_overwrite(_run_cfg(tmp_path, **change), tmp_path / "empty")  # nothing to lose: the run reports it
