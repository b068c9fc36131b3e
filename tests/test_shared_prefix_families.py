"""Shared-prefix execution on tiny twins of the paper's model families: the same option probabilities (evaluation),
loss and LoRA gradients (training) and simulated shares (task=simulate's Simulator) as per-row execution, in
float32 (to 1e-5) and bfloat16 (the dtype the paper's configs load; tolerance below), in both prompt orders and both
shared-prefix layouts (two decoder passes; one packed sequence).

Each twin is the family's architecture class with the real model's attention-relevant settings (key/value head
ratio, rope theta, attention biases, sliding window off) at toy width, a tokenizer of the family's kind with the
special tokens its prompt uses, and the prompt settings of the repo's own model config (conf/model/<name>.yaml,
composed with Hydra: Vicuna's v1.1 template, Llama-3's tokenizer template, DeepSeek-R1-Distill's pinned template
with its empty <think> block, Llama-3 base's plain prompt)."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from conftest import (
    LLAMA3_TEMPLATE,
    build_byte_bpe,
    build_sentencepiece_llama,
    compose_config,
    save_tiny_causal_lm,
    write_rows,
)
from hydra.utils import instantiate
from omegaconf import OmegaConf
from test_shared_prefix import COUNTRIES, survey_rows

from simlab.data.batching import PadCollator, SharedPrefixCollator
from simlab.metrics.divergences import masked_softmax
from simlab.model import attach_lora
from simlab.model.scoring import option_logits
from simlab.simulate import Simulator, make_question
from simlab.training.distributed import clean_param_name
from simlab.training.losses import KLDivergenceLoss

F32_TOLERANCE = 1e-5
# bf16 keeps 8 significant bits (a relative step of 2^-8 ~ 4e-3). The two executions round differently (other matmul
# shapes; the prefix's keys and values computed in another batch), so they can agree only to bf16's own rounding.
# Measured on these twins: probabilities within 3e-3, loss and LoRA gradients within 1.1e-2 of their size, about
# what per-row bf16 itself differs from float32 (probabilities 2e-3 to 5e-3, gradients up to 1.4e-2). The bounds
# below leave room for that and still fail a real error: rows placed one position off (wrong position ids after
# the prefix) differ by 2.5e-2 in probability and 3e-2 to 7e-2 in gradients here, in float32 and bf16 alike.
BF16_PROBABILITY = 1e-2
BF16_RELATIVE = 2e-2

LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
DSQWEN_SPECIAL = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
                  "<think>", "</think>"]

# The real models' settings that shape attention, at toy width (hidden size = heads x 8). From each model's
# config.json on the hub: Vicuna v1.5 (Llama-2) has as many key/value heads as query heads (32/32, 40/40), rope
# theta 1e4; Llama-3-8B 32 heads / 8 key-value, rope theta 5e5; DeepSeek-R1-Distill-Qwen-7B (Qwen2.5-Math) 28/4,
# rope theta 1e4, 14B and 32B 40/8, rope theta 1e6, all with q/k/v biases, use_sliding_window false (a
# sliding_window value that is unused); none ties its input and output embeddings.
TWINS = {
    "vicuna7b": ("llama", dict(num_attention_heads=4, num_key_value_heads=4, rope_theta=1e4, rms_norm_eps=1e-5)),
    "llama3_base": ("llama", dict(num_attention_heads=4, num_key_value_heads=1, rope_theta=5e5, rms_norm_eps=1e-5)),
    "llama3_instruct": ("llama", dict(num_attention_heads=4, num_key_value_heads=1, rope_theta=5e5,
                                      rms_norm_eps=1e-5)),
    "dsqwen7b": ("qwen2", dict(num_attention_heads=7, num_key_value_heads=1, rope_theta=1e4, rms_norm_eps=1e-6,
                               use_sliding_window=False, sliding_window=4096, max_window_layers=28)),
    "dsqwen14b": ("qwen2", dict(num_attention_heads=5, num_key_value_heads=1, rope_theta=1e6, rms_norm_eps=1e-6,
                                use_sliding_window=False, sliding_window=131072, max_window_layers=48)),
}


def tokenizer_for(name: str, folder):
    """The family's kind of tokenizer: SentencePiece with byte fallback (Vicuna, no template of its own: the config
    writes it), byte-level BPE with Llama-3's special tokens and its tokenizer's chat template, or with
    DeepSeek-R1-Distill's (its template is pinned by conf/model/_dsqwen.yaml)."""
    if name.startswith("vicuna"):
        return build_sentencepiece_llama(folder / "spm")
    if name.startswith("llama3"):
        return build_byte_bpe(LLAMA3_SPECIAL, "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>", LLAMA3_TEMPLATE,
                              True)
    return build_byte_bpe(DSQWEN_SPECIAL, "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
                          "<｜end▁of▁sentence｜>", None, True)


def build_twin(name: str, folder):
    architecture, settings = TWINS[name]
    tokenizer = tokenizer_for(name, folder)
    hidden = 8 * settings["num_attention_heads"]
    return save_tiny_causal_lm(folder / "model", tokenizer, architecture, hidden_size=hidden,
                               intermediate_size=2 * hidden, initializer_range=0.1, **settings)


def datamodule(cfg, root, tokenizer, order: str):
    """The config's data module (its prompt style, chat template, answer prefix) over the test's rows."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.update(root=str(root), files=["rows.json"], subset_names={"valid": "V"}, train_subset="V",
                valid_subset=None, prior_subset=None, test_subsets=["V"], average_subsets=[], prompt_order=order,
                invalid_rows_file=None, countries=None, unknown_countries="warn")
    dm = instantiate(data, tokenizer=tokenizer, _convert_="all")
    dm.setup()
    return dm


def check_prompt(name: str, dm, tokenizer) -> None:
    """The config's template is the one in effect, and each special token it writes is one token."""
    end, special = PROMPT_END[name]
    text = dm.prompt.render(dm.rows["V"][0], tokenizer)
    assert text.endswith((end or "") + dm.prompt.answer_prefix) and (end is not None or "<|" not in text)
    ids = dm.datasets["V"].encoded[0].input_ids
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    for token in special:
        assert token in text and tokenizer.convert_tokens_to_ids(token) in ids, token


def run(model, batch, train: bool):
    """(probabilities per row index, loss, LoRA gradients) of one batch; no gradients in evaluation."""
    model.zero_grad(set_to_none=True)
    with torch.inference_mode(not train):
        logits = option_logits(model, batch)
        loss = KLDivergenceLoss()(logits, batch["target"], batch["option_mask"])
    if train:
        loss.backward()
    probs = masked_softmax(logits.detach().float(), batch["option_mask"])
    per_row = {int(r): p[m].clone() for r, p, m in zip(batch["row_index"], probs, batch["option_mask"])}
    grads = {clean_param_name(n): p.grad.detach().float().clone()
             for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    model.zero_grad(set_to_none=True)
    return per_row, float(loss.detach()), grads


def gaps(a, b) -> dict[str, float]:
    """The largest differences: probabilities (absolute), loss and gradients (relative to their size)."""
    (p1, l1, g1), (p2, l2, g2) = a, b
    assert p1.keys() == p2.keys() and g1.keys() == g2.keys()
    out = {"probability": max(float((p1[r] - p2[r]).abs().max()) for r in p1),
           "loss": abs(l1 - l2) / max(abs(l1), 1e-12)}
    if g1:
        size = max(float(g.abs().max()) for g in g1.values())
        out["gradient"] = max(float((g1[n] - g2[n]).abs().max()) for n in g1) / size
    return out


def lora(cfg, model):
    """The config's LoRA (dropout 0: the two executions must see the same masks), with non-zero B matrices so the
    adapter acts on both the prefix and the suffix and every LoRA matrix gets a gradient."""
    config = instantiate(cfg.model.lora, _convert_="all")
    config.lora_dropout = 0.0
    torch.manual_seed(1)  # the same A matrices in float32 and bf16
    model = attach_lora(model, config)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    return model


# how each config's prompt ends before the answer prefix (None: plain, no template), and the special tokens in it
PROMPT_END = {
    "vicuna7b": (" ASSISTANT:", []),
    "llama3_base": (None, []),  # the tokenizer adds <|begin_of_text|>
    "llama3_instruct": ("<|start_header_id|>assistant<|end_header_id|>\n\n", LLAMA3_SPECIAL[:1] + LLAMA3_SPECIAL[2:]),
    "dsqwen7b": ("<｜Assistant｜><think>\n\n</think>\n\n", DSQWEN_SPECIAL[:1] + DSQWEN_SPECIAL[2:]),
    "dsqwen14b": ("<｜Assistant｜><think>\n\n</think>\n\n", DSQWEN_SPECIAL[:1] + DSQWEN_SPECIAL[2:]),
}
QUESTIONS = [("How important is family in your life?", ["Very", "Rather", "Not very", "Not at all"], "q1"),
             ("Do you trust your neighbours?", ["Yes", "No"], "q2")]
SIM_COUNTRIES = ["Japan", "Kenya", "Brazil", "Germany"]


@pytest.fixture
def shared_path_calls(monkeypatch):
    """Counts the batches run through shared-prefix execution, as (layout, number of prefixes), and lets a test set
    the Simulator's collator (``calls.use(pack_max_tokens)``): every batch's prefix shared (its default skips
    batches that would save under 10% of their tokens, as the plain paper prompt does), so the comparison is never
    per-row against per-row."""
    import simlab.model.shared_prefix as shared_prefix
    import simlab.simulate.simulator as simulator

    class Calls(list):
        def use(self, pack_max_tokens: int) -> None:
            monkeypatch.setattr(simulator, "SharedPrefixCollator",
                                partial(SharedPrefixCollator, min_saved_fraction=0.0, pack_max_tokens=pack_max_tokens))

    calls = Calls()
    two_pass, packed = shared_prefix.answer_hidden_states, shared_prefix.packed_answer_hidden_states

    def counted_two_pass(lm, batch):
        calls.append(("two_pass", len(batch["prefix_lengths"])))
        return two_pass(lm, batch)

    def counted_packed(lm, batch):
        calls.append(("packed", int(batch["packed_group"].max()) + 1))
        return packed(lm, batch)

    monkeypatch.setattr(shared_prefix, "answer_hidden_states", counted_two_pass)
    monkeypatch.setattr(shared_prefix, "packed_answer_hidden_states", counted_packed)
    return calls


LAYOUTS = {"two_pass": 0, "packed": 10**6}  # SharedPrefixCollator's pack_max_tokens for each layout


@pytest.mark.parametrize("name", sorted(TWINS))
def test_shared_prefix_is_exact_on_a_tiny_twin_of_each_family(name, tmp_path, shared_data, shared_path_calls):
    folder = build_twin(name, tmp_path)
    write_rows(tmp_path / "rows.json", survey_rows(questions=3, countries=COUNTRIES[:5]))
    questions = [make_question(*q) for q in QUESTIONS]
    for dtype in ("float32", "bfloat16"):
        cfg = compose_config(f"model={name}", f"model.path={folder}", f"model.loader.dtype={dtype}",
                             f"paths.output_dir={tmp_path / 'out'}", "logger=none")
        lm = instantiate(cfg.model.loader)  # the config's loader: the dtype given, sdpa attention
        config = lm.model.config
        assert lm.model.dtype == getattr(torch, dtype) and config._attn_implementation == "sdpa"
        assert (config.num_key_value_heads, config.rope_parameters["rope_theta"], config.tie_word_embeddings) == (
            TWINS[name][1]["num_key_value_heads"], TWINS[name][1]["rope_theta"], False)  # the twin as built
        assert set(getattr(config, "layer_types", None) or ["full_attention"]) == {"full_attention"}
        lm.model = model = lora(cfg, lm.model)
        for order in ("paper", "question_first"):
            dm = datamodule(cfg, tmp_path, lm.tokenizer, order)
            items = list(enumerate(dm.datasets["V"].encoded))
            check_prompt(name, dm, lm.tokenizer)
            pad = lm.tokenizer.pad_token_id
            plain = PadCollator(pad)(items)
            kwargs = dict(prompt_style=cfg.model.prompt_style, chat_template=cfg.model.chat_template,
                          prompt_order=order, data_root=shared_data, batch_size=16, device="cpu")
            a = Simulator(lm, shared_prefix=False, **kwargs).predict_questions(questions, SIM_COUNTRIES)
            for layout, pack in LAYOUTS.items():
                shared_path_calls.clear()
                shared = SharedPrefixCollator(pad, min_saved_fraction=0.0, pack_max_tokens=pack)(items)
                groups = 1 if order == "paper" else 3
                for train in (False, True):  # evaluation: inference mode; training: the loss and LoRA gradients
                    model.train(train)
                    per_row, fast = run(model, plain, train), run(model, shared, train)
                    if train:
                        assert len(per_row[2]) == 8 and min(float(g.abs().max()) for g in per_row[2].values()) > 0
                    diff = gaps(per_row, fast)
                    where = (dtype, order, layout, train, diff)
                    if dtype == "float32":
                        assert max(diff.values()) < F32_TOLERANCE, where
                    else:
                        assert diff["probability"] < BF16_PROBABILITY, where
                        assert max(diff["loss"], diff.get("gradient", 0.0)) < BF16_RELATIVE, where
                assert shared_path_calls == [(layout, groups)] * 2
                # task=simulate's scoring (Simulator.predict_questions) with the same model and the config's prompt
                shared_path_calls.clear()
                shared_path_calls.use(pack)
                b = Simulator(lm, shared_prefix=True, **kwargs).predict_questions(questions, SIM_COUNTRIES)
                # 8 rows, one batch: 1 or 2 prefixes
                assert shared_path_calls == [(layout, 1 if order == "paper" else 2)]
                assert list(a["country"]) == list(b["country"]) and len(a) == len(SIM_COUNTRIES) * (4 + 2)
                gap = float((a["share"] - b["share"]).abs().max())
                assert gap < (F32_TOLERANCE if dtype == "float32" else BF16_PROBABILITY), (dtype, order, layout, gap)


def test_fsdp_bf16_mixed_precision_matches_per_row_on_the_qwen2_twin(tmp_path):
    """trainer=fsdp as it runs the paper's models (tests/fsdp_prefix_worker.py bf16): a bf16 base, float32 LoRA
    matrices as their own units, bf16 mixed precision under autocast, non-reentrant activation checkpointing; two
    ranks on CPU. Two SGD steps must move every LoRA matrix as per-row batches do, to bf16's rounding: here per-row
    bf16 itself lands up to 6% of a matrix's step away from float32; the bound is 15%. Before the prefix pass's
    output joined the graph (simlab/model/shared_prefix.py), the last layer's q_proj LoRA matrices did not move
    (a difference of 100% of their step). The packed layout (one decoder call) is checked the same way."""
    import json
    import subprocess
    import sys

    from conftest import REPO, build_tokenizer

    architecture, settings = TWINS["dsqwen14b"]
    hidden = 8 * settings["num_attention_heads"]
    folder = save_tiny_causal_lm(tmp_path / "qwen2", build_tokenizer(), architecture, hidden_size=hidden,
                                 intermediate_size=2 * hidden, initializer_range=0.1, **settings)
    out = tmp_path / "fsdp.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "fsdp_prefix_worker.py"), str(folder), str(tmp_path), str(out), "bf16"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    report = json.loads(out.read_text())
    assert report["layouts"] == {"per-row": "rows", "shared": "prefix_ids", "packed": "packed_ids"}
    per_row, *shared_layouts = report["losses"]
    assert per_row[0] != per_row[1]  # the first step moved the weights
    for name, shared in zip(("shared", "packed"), shared_layouts):
        assert report["weights"] == 8 and report[name]["same_names"], name
        assert max(abs(a - b) / a for a, b in zip(per_row, shared)) < BF16_RELATIVE, name
        assert report[name]["max_relative_weight_difference"] < 0.15, (name, report)
