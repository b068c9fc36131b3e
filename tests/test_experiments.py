"""Every experiment= config, and every job of its sweep, composes, resolves and instantiates (a dry run: the
data module without loading rows, the loss, the trainer, callbacks and baseline; no weights, no training)."""

import itertools
import os

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

CONF = REPO / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
NEEDS_ADAPTER = {"table5", "table6"}


def sweep_jobs(experiment: str) -> list[list[str]]:
    """The overrides of each job Hydra's basic sweeper would launch for this experiment."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"] + _adapter(experiment), return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params) if cfg.hydra.sweeper.params else {}
    axes = [[f"{key}={value}" for value in str(values).split(",")] for key, values in params.items()]
    return [list(job) for job in itertools.product(*axes)] or [[]]


def _adapter(experiment: str) -> list[str]:
    return ["adapter=/some/finetune/adapter"] if experiment in NEEDS_ADAPTER else []


def _resolved(cfg, key):
    node = cfg[key]
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def test_every_experiment_is_covered():
    assert {"smoke", "table4", "table5", "table6", "table7", "table11"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_jobs_compose_and_instantiate(experiment, tmp_path):
    jobs = sweep_jobs(experiment)
    for job in jobs:
        overrides = [f"experiment={experiment}", *_adapter(experiment), *job, f"paths.output_dir={tmp_path}"]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        resolved = {k: _resolved(cfg, k) for k in cfg if k != "hydra"}  # every interpolation resolves
        cfg = OmegaConf.create(resolved)
        datamodule = instantiate(cfg.data, tokenizer=None)
        assert datamodule.test_subsets, job
        instantiate(cfg.loss)
        instantiate(cfg.trainer, logger=False, callbacks=[instantiate(c) for c in cfg.callbacks.values()])
        if cfg.task.name == "baseline":
            assert cfg.baseline is not None, job
            instantiate(cfg.baseline, _convert_="all")
        else:
            assert cfg.model.loader._target_ == "simlab.model.load_language_model", job
        if "method=ft_adapter" in job:
            assert cfg.model.adapter == "/some/finetune/adapter" and cfg.task.fit is False


def test_table_sweeps_have_the_rows_the_paper_reports():
    assert len(sweep_jobs("table4")) == 8 * 4  # seven paper models + the embedded one, x ZS/ZS[ctrl]/FT/FT[ctrl]
    assert [j[0] for j in sweep_jobs("table7")] == [
        "method=ft", "method=ft_js", "method=ft_ce", "method=ft_wasserstein", "method=ft_shuffled"]
    assert {j[0] for j in sweep_jobs("table11")} == {
        "method=uniform", "method=avg_culture", "method=knn", "method=json_zs", "method=zs", "method=ft"}


def test_prompt_order_sweep_compares_orders_and_styles_with_shared_prefix(tmp_path):
    jobs = sweep_jobs("prompt_order")
    assert sorted(jobs) == sorted([f"data.prompt_order={o}", f"model.prompt_style={s}"]
                                  for o in ("paper", "question_first") for s in ("chat", "plain"))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=prompt_order", *jobs[0], f"paths.output_dir={tmp_path}"])
    assert cfg.data.shared_prefix is True and cfg.task.name == "finetune"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # the paper's models keep their prompt
        paper = compose("config", overrides=["model=llama3_instruct", f"paths.output_dir={tmp_path}"])
    # shared prefixes on (exact: tests/test_shared_prefix_families.py); with the paper's order that changes no batch
    assert paper.data.prompt_order == "paper" and paper.data.shared_prefix is True


@pytest.mark.parametrize("launcher", ["basic", "joblib", "slurm"])
def test_launchers_compose(launcher):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=table7", f"hydra/launcher={launcher}"], return_hydra_config=True)
    target = cfg.hydra.launcher._target_
    assert {"basic": "BasicLauncher", "joblib": "JoblibLauncher", "slurm": "SlurmLauncher"}[launcher] in target
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min == 720


def test_prior_anchored_is_the_quality_run_and_method_ft_stays_the_papers(tmp_path):
    """make run's method=prior_anchored is the configuration the quality table measured (experiments/QUALITY.md:
    ft_prior_similarity + answer-position fallback + option-order augmentation + calibration, LoRA r 16 at lr
    8.96e-4); method=ft keeps the paper's prompt, no prior, no augmentation, no calibration, r 8 at lr 1e-4."""
    def resolved(*overrides):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[*overrides, "logger=none", f"paths.output_dir={tmp_path}"])
        return OmegaConf.to_container(cfg, resolve=True)

    anchored = resolved("method=prior_anchored")
    measured = resolved("method=ft_prior_similarity", "prior.fallback=position", "data.shuffle_options=train",
                        "calibrate=true", "module.optimizer.lr=8.96e-4", "model.lora.r=16")
    assert anchored == measured
    assert anchored["task"]["name"] == "finetune" and anchored["calibrate"] is True
    assert anchored["data"]["prompt_order"] == "question_first" and anchored["data"]["shared_prefix"] is True
    assert anchored["prior"]["similarity"] is True and anchored["prior"]["fallback"] == "position"
    paper = resolved("method=ft")
    assert paper["task"]["name"] == "finetune" and paper["prior"] is None and not paper["calibrate"]
    assert paper["data"]["prompt_order"] == "paper" and paper["data"]["shuffle_options"] is False
    assert paper["module"]["optimizer"]["lr"] == 1e-4 and paper["model"]["lora"]["r"] == 8
    assert "method=prior_anchored" in (REPO / "Makefile").read_text().replace("$(RUN_METHOD)", "prior_anchored")


def test_run_folder_keeps_completed_resumes_checkpointed_and_restarts_a_run_cut_before_its_first_checkpoint(
        tmp_path):
    """experiments/run_folder.sh: an experiment script run again after a cut must never stop at a run that has no
    checkpoint (resume= refuses it); that folder is set aside and the run starts again."""
    import subprocess

    stub = tmp_path / "py"  # stands in for the interpreter: records its arguments, makes the run folder
    stub.write_text('#!/usr/bin/env bash\necho "$@" >> "$CALLS"\n'
                    'for a in "$@"; do case $a in hydra.run.dir=*) mkdir -p "${a#*=}";; esac; done\n')
    stub.chmod(0o755)
    out = tmp_path / "out"
    for name, status, checkpoint in (("done", "completed", False), ("cut", "running", True),
                                     ("early", "running", False)):
        (out / name / "checkpoints").mkdir(parents=True)
        (out / name / "status.json").write_text(f'{{\n  "status": "{status}"\n}}')
        if checkpoint:
            (out / name / "checkpoints" / "last.ckpt").write_bytes(b"")
    script = f'source {REPO / "experiments/run_folder.sh"}; for n in done cut early fresh; do run $n method=ft; done'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                            env={**os.environ, "PY": str(stub), "OUT": str(out), "CALLS": str(tmp_path / "calls")})
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == [f"run.py method=ft logger=csv resume={out / 'cut'}",
                     f"run.py method=ft logger=csv hydra.run.dir={out / 'early'}",
                     f"run.py method=ft logger=csv hydra.run.dir={out / 'fresh'}"], result.stdout
    assert "done: completed, kept" in result.stdout
    aside = [p.name for p in out.iterdir() if p.name.startswith("early.incomplete-")]
    assert len(aside) == 1 and (out / aside[0] / "status.json").is_file()
