"""Inputs that used to reach a library's raw error (or pass silently), each now one line naming the setting or
file, raised before any model is loaded: simulate inputs and settings, observed cells, adapter and model folders,
the optimizer and calibrate_on. File-level; the tiny random Llama only where a simulation is the point."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import REPO
from omegaconf import OmegaConf

QUESTIONS = "- id: cars\n  text: Should cities ban cars?\n  options: [Agree, Disagree]\n"


@pytest.fixture
def questions_file(tmp_path):
    path = tmp_path / "questions.yaml"
    path.write_text(QUESTIONS, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ simulate inputs
@pytest.mark.parametrize("name, content", [
    ("questions.yaml", b"- id: q1\n  text: Caf\xe9 culture\n  options: [Yes, No]\n"),
    ("questions.json", b'[{"id": "q1",\n "text": "Caf\xe9", "options": ["Yes", "No"]}]'),
    ("questions.csv", b"id,text,option_1,option_2\nq1,Caf\xe9,Yes,No\n"),
])
def test_a_question_file_that_is_not_utf8_names_the_file_line_and_byte(tmp_path, name, content):
    from simlab.simulate import read_questions

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{name}: not UTF-8: byte 0xe9 on line 2 \(offset \d+\); save the file as "
                                         r"UTF-8"):
        read_questions(path)


def test_a_byte_order_mark_is_dropped(tmp_path):
    from simlab.simulate import read_questions

    path = tmp_path / "questions.csv"
    path.write_bytes("id,text,option_1,option_2\nq1,Café,Yes,No\n".encode("utf-8-sig"))
    assert read_questions(path)[0].text == "Café"


@pytest.mark.parametrize("rows, message", [
    ("cars,Japan,A,60\ncars,Japan,B,\n", r"line 3: column 'share': is empty or missing"),
    ("cars,Japan,A,60\ncars,Japan,B\n", r"line 3: column 'share': is empty or missing"),
    ("cars,Japan,A,60\ncars,,B,40\n", r"line 3: column 'country': is empty or missing"),
    ("cars,Japan,A,60\ncars,Japan,B,4x\n", r"line 3: column 'share': not a number: '4x'"),
    ("cars,Japon,A,60\n", r"line 2: column 'country'.*unknown country 'Japon'.*did you mean 'Japan'"),
    ("cars,Japan,A,60\ncars,Japan,B,40\xe9\n", r"not UTF-8: byte 0xe9 on line 3"),
])
def test_an_observed_row_with_a_missing_or_bad_cell_names_file_line_and_column(tmp_path, questions_file, rows,
                                                                                message):
    from simlab.simulate import read_observed, read_questions

    path = tmp_path / "observed.csv"
    path.write_bytes(("question_id,country,letter,share\n" + rows).encode("latin-1"))
    with pytest.raises(ValueError, match=rf"observed.csv: {message}"):
        read_observed(path, read_questions(questions_file), ["Japan", "Kenya"])


def test_observed_ids_escaped_by_simulation_csv_are_read_back(tmp_path):
    from simlab.simulate import read_observed
    from simlab.simulate.questions import make_question

    question = make_question("Is =1+1 two?", ["Yes", "No"], id="=q")
    path = tmp_path / "observed.csv"
    path.write_text("question_id,country,letter,share\n'=q,Japan,A,60\n'=q,Japan,B,40\n", encoding="utf-8")
    rows = read_observed(path, [question], ["Japan"])
    assert [(r.question_id, r.country, r.target) for r in rows] == [("=q", "Japan", (0.6, 0.4))]


# ------------------------------------------------------------------------------------------ simulate settings
@pytest.mark.parametrize("settings, message", [
    ({"batch_size": 0}, r"batch_size \(simulate.batch_size\) must be a positive integer, got 0"),
    ({"batch_size": -3}, r"got -3"),
    ({"device": "cuda:99"}, r"device='cuda:99' \(simulate.device\): (CUDA is not available on this machine|this "
                            r"machine has \d+ CUDA device)"),
    ({"device": "gpu"}, r"device='gpu' \(simulate.device\) is not a torch device"),
])
def test_simulate_settings_are_refused_before_the_model_loads(tmp_path, settings, message):
    """The model path does not exist: the setting's error comes first, so it is checked before any loading."""
    from simlab.simulate import Simulator

    cfg = {"model": {"loader": {"path": str(tmp_path / "no-model")}}, "data": {"root": None}, "simulate": settings}
    with pytest.raises(ValueError, match=message):
        Simulator.from_config(cfg)
    with pytest.raises(ValueError, match=message):
        Simulator({"path": str(tmp_path / "no-model")}, **settings)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_clear_error():
    from simlab.simulate.simulator import check_scoring_settings

    with pytest.raises(ValueError, match=r"device='cuda' \(simulate.device\): CUDA is not available on this machine; "
                                         r"use cpu, or leave simulate.device null"):
        check_scoring_settings(64, "cuda")


# ------------------------------------------------------------------------------------------ observed and simulated
def test_an_observed_country_is_shown_as_observed_and_recorded(tiny_llama_dir, tmp_path, questions_file):
    """Japan was surveyed and is also simulated: its cells show the surveyed shares, marked source=observed (the
    model's leave-one-out guess would be a worse number for a cell that is known); Kenya is simulated. The meta
    records the file, countries, questions and cells; every text cell of the CSV is spreadsheet-safe."""
    from simlab.simulate import Simulator, read_observed, read_questions
    from simlab.simulate.outputs import write_simulation
    from simlab.simulate.task import observed_record

    questions = read_questions(questions_file)
    path = tmp_path / "observed.csv"
    path.write_text("question_id,country,letter,share\ncars,Japan,A,70\ncars,Japan,B,30\n", encoding="utf-8")
    observed = read_observed(path, questions, ["Japan", "Kenya"])
    simulator = Simulator.from_config({"model": {"loader": {"path": str(tiny_llama_dir)}, "prompt_style": "plain"},
                                       "data": {"root": None}}, known_countries=["Japan", "Kenya"], observed=observed)
    frame = simulator.predict_questions(questions, ["Japan", "Kenya"])
    assert list(frame["source"]) == ["observed", "observed", "simulated", "simulated"]
    assert list(frame["share"])[:2] == pytest.approx([0.7, 0.3])
    frame.attrs["observed"] = observed_record(path, observed, frame)
    out = tmp_path / "out"
    write_simulation(frame, out)
    meta = json.loads((out / "simulation.meta.json").read_text())
    assert meta["observed"] == {"file": str(path.resolve()), "countries": ["Japan"], "questions": 1, "cells": 1,
                                "cells_shown": 1, "use": meta["observed"]["use"]}
    assert "Japan (observed)" in (out / "simulation.md").read_text()
    written = pd.read_csv(out / "simulation.csv", keep_default_na=False)
    assert list(written["source"]) == ["observed", "observed", "simulated", "simulated"]


def test_every_text_cell_of_simulation_csv_is_spreadsheet_safe(tmp_path):
    """Question ids, countries and option labels a spreadsheet would run as formulas are escaped in the CSV."""
    from simlab.simulate.outputs import write_simulation
    from simlab.simulate.questions import make_question
    from simlab.simulate.simulator import CAUTION, simulation_frame

    question = make_question("=cmd|' /C calc'!A0", ["=HYPERLINK(\"x\")", "+1", "-2", "@SUM(A1)"], id="-1")
    frame = simulation_frame([(question, "Japan")], [[0.25] * 4])
    frame.attrs.update(model="m", model_source="m", adapter=None, prompt_style="plain", input=None,
                       countries=["Japan"], questions={question.id: {"text": question.text,
                                                                     "options": list(question.options)}},
                       caution=CAUTION)
    write_simulation(frame, tmp_path)
    text = (tmp_path / "simulation.csv").read_text()
    cells = [cell for line in text.splitlines()[1:] for cell in line.split(",")]
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in cells), text
    assert "'-1,Japan,A,'=HYPERLINK" in text.replace('"', "") and ",'+1," in text and ",'@SUM(A1)," in text


# ------------------------------------------------------------------------------------------ adapter and model files
def adapter_folder(tmp_path, config: str, weights: bytes | None):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(config, encoding="utf-8")
    if weights is not None:
        (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


@pytest.mark.parametrize("config, weights, error, message", [
    ('{"r": 4, ', b"", ValueError, r"adapter_config.json: not valid JSON \(.*\); the adapter folder \(model.adapter\) "
                                   r"is damaged"),
    ("[1]", b"", ValueError, r"adapter_config.json: not a peft adapter config"),
    ('{"peft_type": "LORA"}', None, FileNotFoundError, r"model.adapter=.*adapter has no adapter weights "
                                                      r"\(adapter_model.safetensors or adapter_model.bin\)"),
    ('{"peft_type": "LORA"}', b"garbage" * 10, ValueError, r"adapter_model.safetensors: not a readable safetensors "
                                                          r"file \(.*header.*\); the adapter folder"),
])
def test_a_damaged_adapter_folder_names_the_file_before_any_model_loads(tmp_path, config, weights, error, message):
    from simlab.simulator.bundle import read_bundle

    with pytest.raises(error, match=message):
        read_bundle(adapter_folder(tmp_path, config, weights))


def test_a_truncated_adapter_weights_file_is_refused(tmp_path, tiny_llama_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from simlab.model.adapters import check_adapter_files

    folder = tmp_path / "adapter"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=2, target_modules=["q_proj"])).save_pretrained(folder)
    assert check_adapter_files(folder).name == "adapter_model.safetensors"
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"adapter_model.safetensors: not a readable safetensors file"):
        check_adapter_files(folder)


def test_a_damaged_bin_adapter_names_the_file_and_never_suggests_loading_code(tmp_path, tiny_llama_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from simlab.model.adapters import load_adapter

    folder = tmp_path / "adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                   LoraConfig(task_type="CAUSAL_LM", r=2, target_modules=["q_proj"])).save_pretrained(folder)
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.bin").write_bytes(b"garbage" * 20)
    with pytest.raises(ValueError, match=r"adapter_model.bin: not a readable weights file, or one holding more than "
                                         r"tensors \(simlab loads weights only\)") as err:
        load_adapter(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), folder)
    assert "weights_only=False" not in str(err.value)


@pytest.mark.parametrize("name, content, message", [
    ("config.json", "", r"config.json is not valid JSON \(the file is empty\)"),
    ("tokenizer_config.json", "{", r"tokenizer_config.json is not valid JSON"),
    ("config.json", "[]", r"config.json is not a JSON object"),
])
def test_a_damaged_model_folder_names_the_file(tmp_path, name, content, message):
    from simlab.model import load_language_model

    (tmp_path / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"model.path: .*{message}.*the model folder is damaged"):
        load_language_model(path=str(tmp_path))


# ------------------------------------------------------------------------------------------ run settings
def settings(**changes):
    cfg = {"task": {"name": "finetune", "fit": True, "calibrates": True}, "calibrate": None, "calibrate_on": "C1-Q2",
           "model": {"adapter": None}, "data": {"test_subsets": ["C1-Q2", "C1-Q3"]},
           "module": {"optimizer": {"lr": 1e-4, "weight_decay": 0.0}}}
    for key, value in changes.items():
        node = cfg
        *parents, last = key.split(".")
        for parent in parents:
            node = node[parent]
        node[last] = value
    return OmegaConf.create(cfg)


@pytest.mark.parametrize("key, value, message", [
    ("module.optimizer.lr", -1, r"module.optimizer.lr must be a finite number > 0, got -1"),
    ("module.optimizer.lr", 0, r"module.optimizer.lr must be a finite number > 0, got 0"),
    ("module.optimizer.lr", float("nan"), r"module.optimizer.lr must be a finite number > 0, got nan"),
    ("module.optimizer.lr", "fast", r"module.optimizer.lr must be a finite number > 0, got 'fast'"),
    ("module.optimizer.weight_decay", -0.1, r"module.optimizer.weight_decay must be a finite number >= 0"),
])
def test_a_bad_optimizer_setting_is_refused(key, value, message):
    from simlab.tasks.lm import check_optimizer

    check_optimizer(settings())
    with pytest.raises(ValueError, match=message):
        check_optimizer(settings(**{key: value}))
    check_optimizer(settings(**{key: value, "task.fit": False}))  # nothing is trained: the optimizer is not built


def test_calibrate_on_must_be_a_tested_subset_when_a_temperature_is_fitted():
    from simlab.tasks.outputs import check_calibration_subset

    check_calibration_subset(settings(calibrate=True))
    check_calibration_subset(settings(calibrate_on="C9-Q9"))  # calibrate=null: no temperature is fitted
    with pytest.raises(ValueError, match=r"calibrate_on=C9-Q9: calibrate=true fits the temperature on it, but it is "
                                         r"not one of the subsets this run tests \(data.test_subsets=\['C1-Q2', "
                                         r"'C1-Q3'\]\)"):
        check_calibration_subset(settings(calibrate=True, calibrate_on="C9-Q9"))
    check_calibration_subset(settings(calibrate=True, calibrate_on="C9-Q9", **{"task.calibrates": False}))


@pytest.mark.parametrize("overrides, message", [
    (["module.optimizer.lr=-1"], "ValueError: module.optimizer.lr must be a finite number > 0, got -1"),
    (["calibrate=true", "calibrate_on=C9-Q9"], "ValueError: calibrate_on=C9-Q9: calibrate=true fits the temperature"),
    (["data.limit_per_subset=0"], "ValueError: data.limit_per_subset must be a positive integer or null"),
])
def test_run_py_refuses_bad_settings_in_one_line_before_the_model_loads(tmp_path, overrides, message):
    """model.path names no folder: the setting's error comes first, as one line on stderr."""
    result = subprocess.run(
        [sys.executable, "run.py", "model=hf", f"model.path={tmp_path / 'no-model'}", "logger=none",
         f"hydra.run.dir={tmp_path / 'run'}", *overrides], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(message), result.stderr[-3000:]
