"""The benchmark's pieces on a tiny random Llama: the reference method and simlab's path (and every ablation
step between them) must give the same predictions and losses; nothing here is timed."""

import subprocess
import sys

import pytest
import torch
from conftest import paper_row, write_rows
from peft import LoraConfig
from transformers import AutoModelForCausalLM

import simlab.model
from simlab.devtools.bench import command, methods, paths, timing, workload
from simlab.devtools.bench.reference import REFERENCE_MAX_LENGTH
from simlab.model import LanguageModel, attach_lora

OPTIONS = ["(A)Very important", "(B)Rather important", "(C)Not very important", "(D)Not at all important"]


def _rows(count=10):
    rows = []
    for i in range(count):
        k = 2 + i % 3
        counts = {chr(65 + j): float((i + j) % 4 + (j == 0)) for j in range(k)}
        dist = {letter: 100 * c / sum(counts.values()) for letter, c in counts.items()}  # percents
        rows.append(paper_row(
            id=str(164 + i),
            input="How important is family " + "in your life " * (i % 5) + "? \nHere are the options: \n",
            options=OPTIONS[:k], options_dist=dist,
        ))
    return rows


@pytest.fixture()
def data(tmp_path, tiny_tokenizer):
    write_rows(tmp_path / "rows.json", _rows())
    return workload.load_bench_data(tiny_tokenizer, root=str(tmp_path), rows=10, seed=0, file="rows.json")


def _lora_model(tiny_llama_dir, dropout=0.0):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    model = attach_lora(base, LoraConfig(r=8, lora_alpha=32, lora_dropout=dropout, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a non-zero adapter, so the LoRA branch changes the scores being compared
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    return model


def test_reference_batches_are_padded_to_512_with_the_answer_slot_on_the_prompt_end(data):
    batch = next(paths.batches(data, methods.REFERENCE, range(len(data)), 4, train=False))
    assert batch["input_ids"].shape == (4, REFERENCE_MAX_LENGTH)
    assert bool(batch["attention_mask"].all())  # the reference's example.ge(0) mask
    for b, row in enumerate(batch["row_index"].tolist()):
        ids = data.encoded[row].input_ids
        assert batch["input_ids"][b, : len(ids)].tolist() == ids
        assert int(batch["answer_index"][b]) == len(ids) - 1
        assert set(batch["input_ids"][b, len(ids):].tolist()) == {data.pad_token_id}


def test_every_ablation_step_gives_the_reference_predictions_and_loss(data, tiny_llama_dir):
    model = _lora_model(tiny_llama_dir)
    indices = list(range(len(data)))
    reference = paths.evaluate(model, data, methods.REFERENCE, indices, batch_size=4)
    assert sorted(reference.probs) == indices
    for rung in methods.EVAL_LADDER[1:]:
        result = paths.evaluate(model, data, rung, indices, batch_size=4)
        assert paths.max_prob_difference(reference, result) < 1e-4, rung.name
        assert result.loss == pytest.approx(reference.loss, abs=1e-4), rung.name
    for row in indices:
        assert len(reference.probs[row]) == len(data.rows[row].letters)
        assert float(reference.probs[row].sum()) == pytest.approx(1.0, abs=1e-5)


def test_a_training_step_is_the_same_on_both_paths(data, tiny_llama_dir):
    model = _lora_model(tiny_llama_dir)
    runner = timing.Bench(model, data, lr=1e-3, eval_batch=4, train_batch=len(data), autocast=False)
    ref_loss, sim_loss, grad_diff = runner.train_check(list(range(len(data))))
    assert sim_loss == pytest.approx(ref_loss, abs=1e-5)
    assert grad_diff < 1e-5
    after = {}
    for method in (methods.REFERENCE, methods.SIMLAB):  # one step on all rows: same loss, same updated adapter
        optimizer = runner.reset()
        losses = paths.train_steps(model, optimizer, data, method, range(len(data)), len(data), seed=0)
        after[method.name] = (losses, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    assert after["simlab"][0] == pytest.approx(after["reference"][0], abs=1e-5)
    for name, value in after["reference"][1].items():
        torch.testing.assert_close(after["simlab"][1][name], value, rtol=1e-4, atol=1e-6)
        assert not torch.equal(value, runner.initial[name]) or "lora_A" in name  # lora_B always moves


def test_peak_rss_sees_a_large_allocation():
    # In a fresh process: in the suite's worker, memory that an earlier test freed (a collected cycle, an allocator's
    # free list) can make room for the block without the RSS growing, and the test failed once that way.
    script = ("import torch\nfrom simlab.devtools.bench import meters\n"
              "with meters.PeakRSS() as memory:\n    block = torch.ones(64 * 2**20)\n"  # 256 MiB, every page touched
              "print(memory.delta_mib)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.split()[-1]) > 200


@pytest.fixture
def tiny_bench(tmp_path, tiny_tokenizer, tiny_llama_dir, monkeypatch) -> list[str]:
    """The bench's CLI arguments for 8 rows of a tiny Llama (the embedded model's loader replaced by it)."""
    (tmp_path / "wvs7").mkdir()
    write_rows(tmp_path / "wvs7" / "sft_wvs_valid.json", _rows(8))
    tiny = LanguageModel(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), tiny_tokenizer, "tiny")
    monkeypatch.setattr(simlab.model, "load_language_model", lambda **kwargs: tiny)
    return ["--rows", "8", "--eval-repeats", "2", "--train-repeats", "1", "--train-steps", "1", "--eval-batch", "4",
            "--train-batch", "4", "--data-root", str(tmp_path)]


def test_the_cli_ends_with_the_two_speedup_lines(tiny_bench, capsys):
    code = command.main([*tiny_bench, "--ablation", "--ablation-rows", "4", "--threads", "1",
        "--profile",
    ])
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert code == 0
    assert [line.split(": ")[0] for line in lines[-4:]] == [
        "eval_speedup", "train_speedup", "prefix_eval_speedup", "prefix_train_speedup"]
    assert all(float(line.split(": ")[1]) > 0 for line in lines[-4:])
    assert any(line.startswith("| + torch.inference_mode = simlab |") for line in lines)
    fractions = next(line for line in lines if line.startswith("matmul_fraction: "))
    assert "simlab eval " in fractions and "shared-prefix eval " in fractions
    assert any(line.startswith("| eval tokens computed per row | 512.0 |") for line in lines)
    agreement = next(line for line in lines if line.startswith("prefix_agreement: "))
    assert "over 8 rows" in agreement
    for stage in ("eval", "train"):
        for path in ("reference", "simlab", "shared-prefix"):
            assert any(line.startswith(f"profile, {stage}, {path}, ") for line in lines), (stage, path)


def test_two_pass_times_the_unpacked_layout_beside_the_packed_one(tiny_bench, capsys):
    code = command.main([*tiny_bench, "--threads", "1", "--no-reference", "--two-pass",
        "--pack-max-tokens", "100000",
    ])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert [line.split(": ")[0] for line in lines[-4:]] == [
        "prefix_eval_speedup", "prefix_train_speedup", "packed_eval_speedup", "packed_train_speedup"]
    assert next(line for line in lines if line.startswith("| measure |")).endswith(
        "| simlab | shared-prefix | two-pass | shared-prefix / simlab | shared-prefix / two-pass |")
    agreement = next(line for line in lines if line.startswith("two_pass_agreement: "))
    assert float(agreement.rsplit("= ", 1)[1]) < 1e-5
