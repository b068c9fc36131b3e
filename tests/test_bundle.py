"""The trained simulator as one folder (simlab.simulator.bundle): the manifest, legacy folders, the settings an
adapter imposes on a run (and the errors when a run contradicts them), end to end through run.py on a tiny Llama."""

import json
import logging
import subprocess
import sys

import pytest
from conftest import REPO

from simlab.simulator.bundle import (
    MANIFEST_FILE,
    AdapterMismatch,
    manifest_from_config,
    read_bundle,
    resolve_settings,
    write_manifest,
)

SUBSETS = ["C1-Q2", "C1-Q3", "C2-Q1", "C2-Q2", "C2-Q3", "C3-Q1", "C3-Q2", "C3-Q3"]
TINY = ("data.limit_per_subset=8", "data.max_length=2048")


def run_py(*overrides):
    return subprocess.run([sys.executable, "run.py", *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=900)


def ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture
def adapter_dir(tmp_path, tiny_llama_dir):
    """A saved peft adapter (random weights) inside a folder standing for its run."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    config = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=False)
    folder = tmp_path / "run" / "adapter"
    get_peft_model(model, config).save_pretrained(folder)
    return folder


def trained_config(tiny_llama_dir, prompt_order="question_first"):
    return {"model": {"name": "hf", "loader": {"_target_": "simlab.model.load_language_model",
                                               "path": str(tiny_llama_dir), "dtype": "float32"},
                      "prompt_style": "plain", "chat_template": None, "prompt_order": prompt_order,
                      "shared_prefix": True, "lora": {"_target_": "peft.LoraConfig", "r": 4}},
            "data": {"prompt_style": "plain", "chat_template": None, "prompt_order": prompt_order,
                     "shared_prefix": True, "answer_prefix": " my answer would be (", "country_pattern": "x"}}


def test_the_manifest_round_trips(adapter_dir, tiny_llama_dir):
    manifest = manifest_from_config(trained_config(tiny_llama_dir), prior_build={"similarity": False},
                                    data={"subset": "C1-Q1"}, code={"commit": "0" * 40, "dirty": False})
    write_manifest(adapter_dir, manifest)
    assert json.loads((adapter_dir / MANIFEST_FILE).read_text()) == manifest
    bundle = read_bundle(adapter_dir)
    assert bundle.manifest == manifest and bundle.assumed is None
    assert bundle.settings == {"prompt_order": "question_first", "prompt_style": "plain", "chat_template": None,
                               "base_model": {"path": str(tiny_llama_dir)}, "prior": {"similarity": False},
                               "dtype": "float32", "shared_prefix": True}
    assert manifest["lora"] == {"r": 4} and manifest["prompt"]["answer_prefix"] == " my answer would be ("

    broken = dict(manifest, prompt={"prompt_style": "plain"})
    write_manifest(adapter_dir, broken)
    with pytest.raises(ValueError, match=r"simulator.json: field 'prompt.prompt_order' missing"):
        read_bundle(adapter_dir)


def test_a_folder_without_manifest_loads_with_a_warning_naming_what_was_assumed(adapter_dir, caplog):
    from simlab.simulator import bundle as module

    with caplog.at_level(logging.WARNING):
        bundle = read_bundle(adapter_dir)
    assert bundle.settings == {} and "assumed nothing about its prompt" in caplog.text
    caplog.clear()
    module._WARNED.clear()
    (adapter_dir.parent / "config_resolved.yaml").write_text(
        "data:\n  prompt_order: question_first\n  prompt_style: plain\n", encoding="utf-8")
    (adapter_dir / "prior.json").write_text('{"build": {"similarity": false}}', encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        bundle = read_bundle(adapter_dir)
    assert bundle.settings == {"prompt_order": "question_first", "prompt_style": "plain",
                               "prior": {"similarity": False}}
    assert "no simulator.json" in caplog.text and "prompt_order=question_first, prompt_style=plain" in caplog.text


def test_settings_come_from_the_adapter_unless_asked_explicitly(adapter_dir, tiny_llama_dir):
    write_manifest(adapter_dir, manifest_from_config(trained_config(tiny_llama_dir), prior_build=None, data=None,
                                                     code=None))
    bundle = read_bundle(adapter_dir)
    names = {"prompt_order": "model.prompt_order"}
    asked = {"prompt_order": "paper", "prompt_style": "chat", "shared_prefix": False}
    resolved, mismatches = resolve_settings(bundle, asked, explicit=(), names=names)
    assert resolved["prompt_order"] == "question_first" and resolved["prompt_style"] == "plain" and not mismatches
    with pytest.raises(AdapterMismatch, match=(
            rf"adapter {adapter_dir} was trained with model.prompt_order=question_first; this run asks "
            r"model.prompt_order=paper \(add model.allow_mismatch=true to score it anyway\)")):
        resolve_settings(bundle, asked, explicit={"prompt_order"}, names=names)
    resolved, mismatches = resolve_settings(bundle, asked, explicit={"prompt_order", "shared_prefix"},
                                            allow_mismatch=True, names=names)
    assert resolved["prompt_order"] == "paper" and resolved["shared_prefix"] is False  # soft: no mismatch
    assert mismatches == [{"setting": "model.prompt_order", "adapter": "question_first", "run": "paper"}]


def test_the_command_line_tells_which_settings_are_explicit():
    from simlab.tasks.common import explicit_settings

    assert explicit_settings(["model.prompt_order=paper", "model.adapter=x", "logger=none"]) == {"prompt_order"}
    assert explicit_settings(["+data.prompt_style=chat", "prior.fallback=position"]) == {"prompt_style", "prior"}
    assert explicit_settings(["model=hf", "model.loader.dtype=bfloat16"]) == {"base_model", "dtype"}
    assert explicit_settings(["method=prior_anchored", "experiment=smoke"]) == set()


def test_the_python_api_refuses_a_prompt_the_adapter_was_not_trained_on(adapter_dir, tiny_llama_dir, shared_data):
    from simlab.simulate import Simulator

    write_manifest(adapter_dir, manifest_from_config(trained_config(tiny_llama_dir), prior_build=None, data=None,
                                                     code=None))
    model = {"path": str(tiny_llama_dir)}
    sim = Simulator(model, adapter=adapter_dir, data_root=shared_data, device="cpu")
    assert sim.prompt.order == "question_first" and sim.prompt.style == "plain" and sim.shared_prefix
    with pytest.raises(AdapterMismatch, match=(r"trained with prompt_order=question_first; this run asks "
                                                    r"prompt_order=paper \(pass allow_mismatch=True")):
        Simulator(model, adapter=adapter_dir, prompt_order="paper", device="cpu")
    sim = Simulator(model, adapter=adapter_dir, prompt_order="paper", allow_mismatch=True, device="cpu")
    assert sim.prompt.order == "paper"
    assert sim.provenance["adapter_mismatch"] == [{"setting": "prompt_order", "adapter": "question_first",
                                                   "run": "paper"}]


class Payload:
    """Unpickling it would call a function of the file's choosing (here one that writes a file)."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_a_crafted_checkpoint_cannot_run_code(tmp_path):
    import torch

    from simlab.simulator.checkpoints import load_checkpoint_weights

    target = tmp_path / "written-by-the-checkpoint"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "evil": Payload(target)}, tmp_path / "crafted.ckpt")
    with pytest.raises(ValueError, match=r"crafted.ckpt: not a checkpoint simlab can read safely"):
        load_checkpoint_weights(tmp_path / "crafted.ckpt")
    assert not target.exists()
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 1}, tmp_path / "plain.ckpt")
    assert set(load_checkpoint_weights(tmp_path / "plain.ckpt")) == {"w"}


# ---------------------------------------------------------------------------------------------- through run.py
@pytest.fixture(scope="module")
def anchored(tmp_path_factory, tiny_llama_dir, shared_data):
    """The recipe (method=prior_anchored: question-first plain prompt, similarity prior, calibrated) fine-tuned
    at smoke size on the tiny Llama."""
    out = tmp_path_factory.mktemp("anchored")
    ok(run_py("model=hf", f"model.path={tiny_llama_dir}", "method=prior_anchored", "experiment=smoke", "logger=none",
              "trainer.limit_train_batches=2", *TINY, f"data.root={shared_data}", f"hydra.run.dir={out}"))
    return out


def test_an_adapter_is_evaluated_with_its_own_prompt_and_prior(anchored, tiny_llama_dir, shared_data, tmp_path):
    manifest = json.loads((anchored / "adapter" / MANIFEST_FILE).read_text())
    assert manifest["prompt"]["prompt_order"] == "question_first" and manifest["prompt"]["prompt_style"] == "plain"
    assert manifest["prior"]["similarity"] is True and manifest["lora"]["r"] == 16
    assert manifest["training_data"]["subset"] == "C1-Q1" and manifest["training_data"]["rows"] == 8
    assert len(manifest["training_data"]["rows_sha256"]) == 64 and len(manifest["code"]["commit"]) == 40

    common = ("model=hf", f"model.path={tiny_llama_dir}", f"model.adapter={anchored / 'adapter'}", "logger=none",
              *TINY, f"data.root={shared_data}")
    ok(run_py("task=zeroshot", *common, f"hydra.run.dir={tmp_path / 'zs'}"))
    tuned = json.loads((anchored / "metrics.json").read_text())
    again = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    assert again["prior"] == tuned["prior"] and again["calibration"]["temperature"] == tuned["calibration"][
        "temperature"]
    assert again["settings"]["prompt_order"] == "question_first" and again["prompt_style"] == "plain"
    assert "adapter_mismatch" not in again
    # float rounding: the fine-tune took C1-Q2 from its validation and tested the rest in one merged loader without
    # it; this run tests all of them together, so batches hold other rows (data.merge_test_subsets)
    for subset in SUBSETS:
        assert again["subsets"][subset]["one_minus_jsd"] == pytest.approx(tuned["subsets"][subset]["one_minus_jsd"],
                                                                          abs=1e-6)

    failed = run_py("task=zeroshot", *common, "model.prompt_order=paper", f"hydra.run.dir={tmp_path / 'paper'}")
    assert failed.returncode != 0
    assert (f"adapter {anchored / 'adapter'} was trained with model.prompt_order=question_first; this run asks "
            f"model.prompt_order=paper (add model.allow_mismatch=true") in failed.stderr

    ok(run_py("task=zeroshot", *common, "model.prompt_order=paper", "model.allow_mismatch=true",
              "data.test_subsets=[C2-Q1]", f"hydra.run.dir={tmp_path / 'allowed'}"))
    allowed = json.loads((tmp_path / "allowed" / "metrics.json").read_text())
    assert allowed["adapter_mismatch"] == [{"setting": "model.prompt_order", "adapter": "question_first",
                                            "run": "paper"}]
    assert allowed["settings"]["prompt_order"] == "paper"


def test_simulate_with_an_adapter_needs_no_prompt_overrides(anchored, tiny_llama_dir, shared_data, tmp_path):
    import pandas as pd

    from simlab.simulate import Simulator, read_questions

    example = REPO / "experiments" / "simulate_example.yaml"
    result = ok(run_py("task=simulate", f"simulate.input={example}", "model=hf", f"model.path={tiny_llama_dir}",
                       f"model.adapter={anchored / 'adapter'}", "simulate.countries=[Japan,Kenya]", "logger=none",
                       f"data.root={shared_data}", f"hydra.run.dir={tmp_path / 'sim'}"))
    assert "model.prompt_order=question_first from the adapter" in result.stdout + result.stderr + (
        tmp_path / "sim" / "run.log").read_text()
    cli = pd.read_csv(tmp_path / "sim" / "simulation.csv", keep_default_na=False)
    # the API on the same adapter: the same simulator (prompt, prior, temperature) from its folder alone
    api = Simulator.from_run(tmp_path / "sim", device="cpu").predict_questions(read_questions(example),
                                                                                ["Japan", "Kenya"])
    assert api.attrs["prompt_order"] == "question_first" and api.attrs["temperature"] is not None
    assert api["share"].to_numpy() == pytest.approx(cli["share"].to_numpy(), abs=1e-6)
    # and its prediction intervals (calibration.json) and its run's effective respondents (issue 23)
    assert api.attrs["intervals"]["from"] == str(anchored / "adapter" / "calibration.json")
    assert api["upper"].to_numpy() == pytest.approx(cli["upper"].to_numpy(), abs=1e-6)
    assert api.attrs["effective_respondents"]["countries"]["Japan"]["subsets"].keys() == {"C1-Q3"}
