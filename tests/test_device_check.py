"""The paper-scale device check (scripts/device_check.py, simlab.devtools.bench.paper_scale) on a CPU: the paper
models' architectures are the hub's (parameter counts), the ``--tiny`` run of the whole check prints and writes
every field, finite and positive, with the three paths agreeing; the largest-batch search stops at out of memory."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
from conftest import LLAMA3_TEMPLATE, REPO, compose_config, write_rows
from omegaconf import OmegaConf

from simlab.devtools.bench import paper_scale, workload
from simlab.devtools.bench.methods import SIMLAB
from simlab.devtools.bench.paper_models import (
    LLAMA3_CHAT_TEMPLATE,
    architecture_config,
    family_of,
    tiny_architecture,
)
from simlab.devtools.bench.timing import Bench
from simlab.model import attach_lora, paper_lora_config

# parameter counts of the hub checkpoints (embeddings and untied heads included)
HUB_PARAMETERS = {
    "llama3_instruct": 8_030_261_248, "llama3_base": 8_030_261_248,
    "vicuna7b": 6_738_415_616, "vicuna13b": 13_015_864_320,
    "dsqwen7b": 7_615_616_512, "dsqwen14b": 14_770_033_664, "dsqwen32b": 32_763_876_352,
}


def _script():
    spec = importlib.util.spec_from_file_location("device_check", REPO / "scripts" / "device_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(HUB_PARAMETERS))
def test_each_paper_model_config_has_the_hub_architecture(name):
    from transformers import AutoModelForCausalLM

    config = architecture_config(OmegaConf.to_container(compose_config(f"model={name}").model.architecture))
    with torch.device("meta"):  # the shape only: no memory
        model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == HUB_PARAMETERS[name]
    assert type(model).__name__ == ("Qwen2ForCausalLM" if name.startswith("dsqwen") else "LlamaForCausalLM")
    tiny = tiny_architecture(config, 1000)
    assert (tiny.num_hidden_layers, tiny.hidden_size, tiny.vocab_size) == (2, 64, 1000)
    grouped = config.num_key_value_heads < config.num_attention_heads
    assert (tiny.num_key_value_heads < tiny.num_attention_heads) == grouped  # grouped-query attention kept
    assert type(tiny) is type(config) and family_of(name)


def test_the_stand_in_llama3_template_is_the_hubs():
    assert LLAMA3_CHAT_TEMPLATE == LLAMA3_TEMPLATE


def test_an_architecture_without_a_model_type_is_refused():
    with pytest.raises(ValueError, match="needs model_type"):
        architecture_config({"hidden_size": 64})


def test_an_unknown_family_is_refused():
    with pytest.raises(ValueError, match="not one of the paper's families"):
        family_of("smollm2_135m")


def test_rows_are_counted_by_subset():
    rows = {"a.json": [{"data_type": "train"}] * 3 + [{"data_type": "test_1"}] * 2, "b.json": [{"data_type": "valid"}]}
    names = {"train": "C1-Q1", "valid": "C1-Q2", "test_1": "C1-Q3"}
    assert paper_scale.count_rows(rows, names, ["C1-Q1"]) == 3
    assert paper_scale.count_rows(rows, names, ["C1-Q2", "C1-Q3"]) == 3


def test_the_tiny_check_reports_every_field_and_the_paths_agree(tmp_path, capsys):
    """The whole check at tiny shapes (the CPU twin of the GPU run): the summary table and the JSON."""
    target = tmp_path / "device_check.json"
    assert _script().main(["--tiny", "--json", str(target)]) == 0
    printed = capsys.readouterr().out
    assert "== summary" in printed and "| llama3_instruct | shared-prefix |" in printed
    summary = json.loads(target.read_text())
    assert summary["projection"] == {"train_rows": 6841, "test_rows": 8452, "epochs": 5}  # counted in the data
    assert summary["matmul_peak_gflops"] > 0
    assert sorted(summary["models"]) == ["dsqwen32b", "llama3_instruct"]
    for name, model in summary["models"].items():
        assert model["errors"] == [], name
        assert sorted(model["paths"]) == ["reference", "shared-prefix", "simlab"]
        for path, values in model["paths"].items():
            assert {key for _, key, _ in paper_scale.SUMMARY_COLUMNS} <= set(values), path
            for key, value in values.items():
                assert math.isfinite(value) and value > 0, (name, path, key)
                assert f"| {name} | {path} |" in printed
        # simlab computes fewer token positions than the reference's 512 per row; shared prefixes fewer still
        paths = model["paths"]
        assert paths["reference"]["eval_computed_tokens_per_row"] == 512
        assert paths["shared-prefix"]["eval_computed_tokens_per_row"] < paths["simlab"]["eval_computed_tokens_per_row"]
        agreement = model["agreement"]
        assert agreement["failures"] == []
        assert agreement["max_prob_diff_reference_simlab"] <= 1e-4
        assert agreement["max_prob_diff_simlab_shared_prefix"] <= 1e-5
        for path in ("simlab", "reference"):
            found = model["largest_batch"][path]
            assert found["largest"] == 2 and found["stopped_by"] == "cap" and found["peak_memory_gib"] > 0
        tokens = model["prompt_tokens"]
        assert tokens["min"] > 100 and tokens["split_rows"] == 6841  # real WVS prompts in a chat template
        # projections: the reference at its row rate (512 positions a row), simlab at its token rate over the split
        assert paths["reference"]["projected_finetune_h"] == pytest.approx(
            5 * 6841 / paths["reference"]["train_rows_per_s"] / 3600)
        assert paths["simlab"]["projected_test_h"] == pytest.approx(
            8452 * tokens["split_mean"] / paths["simlab"]["eval_tokens_per_s"] / 3600)


def test_the_compiled_path_is_measured_beside_the_eager_ones_and_agrees(tmp_path, capsys):
    """--compile: a fourth path, shared prefixes through compiled decoder layers (the same model; the other paths
    run it eagerly), with its rates, its speed-up line and its agreement with the eager shared-prefix path."""
    import torch

    target = tmp_path / "device_check.json"
    torch._dynamo.reset()
    try:
        assert _script().main(["--tiny", "--compile", "--compile-mode", "reduce-overhead", "--pack-length-multiple",
                               "16", "--models", "llama3_instruct", "--no-reference", "--no-batch-search", "--json",
                               str(target)]) == 0
    finally:
        torch._dynamo.reset()
    printed = capsys.readouterr().out
    assert "compiled decoder layers: 2 (torch.compile, dynamic shapes, mode reduce-overhead; packed batches padded " \
           "to a multiple of 16 tokens)" in printed and "| llama3_instruct | compiled |" in printed
    assert "compiled its evaluation and training graphs in" in printed
    model = json.loads(target.read_text())["models"]["llama3_instruct"]
    skips = [note for note in model["notes"] if note.startswith("CUDA graphs: ")]
    assert len(skips) == 1 and int(skips[0].split()[2]) > 0, model["notes"]  # a CPU records none
    assert sorted(model["paths"]) == ["compiled", "shared-prefix", "simlab"] and model["errors"] == []
    assert all(value > 0 for value in model["paths"]["compiled"].values())
    assert model["agreement"]["failures"] == []
    assert model["agreement"]["max_prob_diff_shared_prefix_compiled"] <= 1e-5


@pytest.mark.parametrize("options", [["--compile-mode", "reduce-overhead"], ["--pack-length-multiple", "64"],
                                     ["--compile", "--pack-length-multiple", "0"]])
def test_compile_options_without_their_path_are_a_usage_error(options, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _script().main(["--tiny", "--models", "llama3_instruct", *options])
    assert exit_info.value.code == 2 and "--pack-length-multiple" in capsys.readouterr().err


def test_the_paper_batch_sizes_take_the_two_pass_layout_and_agree(tmp_path, monkeypatch):
    """At the GPU run's batch sizes (eval 48, train 8) evaluation batches pass the packing threshold, so the two-pass
    layout (a cache carries the prefix) runs, with the steady-state options: the path that failed on the H200
    under transformers 5.17 while the tiny default (packed batches) passed."""
    from simlab.model import shared_prefix

    calls = []
    two_pass = shared_prefix.answer_hidden_states
    monkeypatch.setattr(shared_prefix, "answer_hidden_states", lambda lm, batch: calls.append(1) or two_pass(lm, batch))
    target = tmp_path / "device_check.json"
    argv = ["--tiny", "--models", "llama3_instruct", "--rows", "96", "--eval-batch", "48", "--train-batch", "8",
            "--train-steps", "2", "--warm-train", "--no-reference", "--no-batch-search", "--json", str(target)]
    assert _script().main(argv) == 0
    assert calls, "no two-pass batch ran"
    model = json.loads(target.read_text())["models"]["llama3_instruct"]
    assert model["errors"] == [] and model["largest_batch"] == {}
    assert sorted(model["paths"]) == ["shared-prefix", "simlab"]
    assert model["agreement"]["max_prob_diff_simlab_shared_prefix"] <= 1e-5
    for values in model["paths"].values():  # computed-token utilisation next to the per-row-work MFU
        assert 0 < values["train_hfu"] and 0 < values["eval_hfu"]
    shared = model["paths"]["shared-prefix"]
    assert shared["eval_hfu"] < shared["eval_mfu"]  # the prefix computed once: less work done than a row needs


def test_the_largest_batch_search_stops_at_out_of_memory(tmp_path, tiny_tokenizer, tiny_llama_dir, monkeypatch):
    from conftest import paper_row
    from transformers import AutoModelForCausalLM

    write_rows(tmp_path / "rows.json", [paper_row(id=str(164 + i)) for i in range(4)])
    data = workload.load_bench_data(tiny_tokenizer, root=str(tmp_path), rows=4, seed=0, file="rows.json")
    model = attach_lora(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), paper_lora_config())
    bench = Bench(model, data, lr=1e-3, eval_batch=4, train_batch=2, autocast=False)
    real = paper_scale.train_steps
    sizes = []

    def steps(model, optimizer, data, method, indices, batch_size, **kwargs):
        sizes.append(batch_size)
        if batch_size >= 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, optimizer, data, method, indices, batch_size, **kwargs)

    monkeypatch.setattr(paper_scale, "train_steps", steps)
    settings = paper_scale.Settings(batch_start=2, batch_cap=64, batch_seconds=60)
    found = paper_scale.largest_batch(bench, SIMLAB, settings)
    assert sizes == [2, 4, 8]  # doubling, the rows cycled past the sample's 4
    assert (found["largest"], found["first_failing"], found["stopped_by"]) == (4, 8, "out of memory")
    assert all(p.grad is None for p in model.parameters())  # nothing left from the failed step


def test_out_of_memory_on_the_reference_measures_simlabs_paths_alone(monkeypatch):
    """A 32B model's reference training batch (8 x 512 tokens) may not fit one GPU: the check goes on without it."""
    script = _script()
    calls = []

    def measure_paths(bench, settings, peak_gflops, peak_label, projection, report):
        calls.append(settings.no_reference)
        if not settings.no_reference:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        report.paths["simlab"] = {"train_rows_per_s": 1.0}

    class FakeBench:
        model, device = torch.nn.Linear(2, 2), torch.device("cpu")

    monkeypatch.setattr(script, "measure_paths", measure_paths)
    report = paper_scale.ModelReport("dsqwen32b", 1, 1.0, 1.0)
    script.measure(FakeBench(), paper_scale.Settings(), (1.0, "peak"), paper_scale.Projection(1, 1), report)
    assert calls == [False, True] and report.errors == [] and list(report.paths) == ["simlab"]
    assert "out of memory with the reference path" in report.notes[0]


@pytest.mark.parametrize(("models", "message"), [("nope", "no conf/model/nope.yaml"),
                                                 ("smollm2_135m", "has no architecture: block")])
def test_a_model_without_an_architecture_is_one_line_before_any_work(models, message, capsys):
    with pytest.raises(SystemExit) as info:
        _script().main(["--tiny", "--models", f"llama3_instruct,{models}"])
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err and "device:" not in captured.out  # before the matmul peak


def test_a_vocabulary_smaller_than_the_stand_in_tokenizers_is_enlarged_and_said(tiny_tokenizer):
    """Vicuna's 32,000 tokens against the stand-in's 49k: the ids must fit the embedding; the note says so."""
    from transformers import LlamaConfig

    from simlab.devtools.bench.paper_models import build_random_model

    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4)
    built = build_random_model(config, tiny_tokenizer, torch.device("cpu"), torch.bfloat16)
    assert built.model.config.vocab_size == len(tiny_tokenizer) and config.vocab_size == 100  # the config untouched
    assert f"from 100 to the stand-in tokenizer's {len(tiny_tokenizer)}" in built.vocab_note
    assert {p.dtype for p in built.model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32  # restored
    assert built.parameters == sum(p.numel() for p in built.model.parameters()) and built.weights_gib > 0
