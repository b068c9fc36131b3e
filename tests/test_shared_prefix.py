"""Question-first prompts and shared-prefix execution: the prompt text, the prefix-grouped sampler and collator, and
exactness against per-row execution (option probabilities, loss and LoRA gradients to 1e-5 in float32) on a tiny
random Llama, with several questions in a batch, [ctrl], shuffled options and activation checkpointing."""

from __future__ import annotations

import math
import re

import pytest
import torch
from conftest import paper_row, write_rows
from peft import LoraConfig
from transformers import AutoModelForCausalLM

from simlab.data import SurveyDataModule
from simlab.data.batching import (
    EncodedRow,
    LengthGroupedBatchSampler,
    PadCollator,
    PrefixGroupedBatchSampler,
    SharedPrefixCollator,
    split_prefix,
)
from simlab.data.prompts import PromptFormat
from simlab.data.rows import ENGLISH_COUNTRY_PATTERN, parse_row
from simlab.metrics.divergences import masked_softmax
from simlab.model import attach_lora
from simlab.model.scoring import option_logits
from simlab.model.shared_prefix import SharedPrefixUnsupported
from simlab.training.distributed import clean_param_name
from simlab.training.losses import KLDivergenceLoss

TOLERANCE = 1e-5
OPTIONS = ["(A)Very important", "(B)Rather important", "(C)Not very important", "(D)Not at all important"]
COUNTRIES = ["Andorra", "Brazil", "New Zealand", "Japan", "Kenya", "Bolivia", "Chile"]
TOPICS = ["family", "work", "religion", "politics", "friends"]


def percents(weights) -> dict[str, float]:
    """Shares in percent (summing to 100, as the data checks require) from positive weights."""
    total = sum(weights)
    return {chr(65 + j): 100.0 * w / total for j, w in enumerate(weights)}


def survey_rows(questions: int = 4, countries=COUNTRIES) -> list[dict]:
    """questions x countries rows in the paper's format; option counts 2-4, distinct targets."""
    rows = []
    for q in range(questions):
        k = 2 + q % 3
        for c, country in enumerate(countries):
            rows.append(paper_row(
                id=str(164 + q),
                instruction=f"How would someone from {country} answer the following question:\n\n",
                input=f"How important is {TOPICS[q % len(TOPICS)]} in your life{' really' * q}? "
                      f"\nHere are the options: \n",
                options=OPTIONS[:k],
                options_dist=percents([(q + c + j) % 5 + 1 for j in range(k)]),
            ))
    return rows


def datamodule(tmp_path, tokenizer, rows=None, **kwargs) -> SurveyDataModule:
    write_rows(tmp_path / "rows.json", rows if rows is not None else survey_rows())
    dm = SurveyDataModule(tokenizer, ["rows.json"], {"valid": "V"}, None, None, ["V"], root=str(tmp_path),
                          prompt_style=kwargs.pop("prompt_style", "chat"), **kwargs)
    dm.setup()
    return dm


def lora_model(tiny_llama_dir):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    model = attach_lora(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a non-zero adapter, so the LoRA branch acts on the prefix and the suffix
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    return model


def scores(model, batch):
    """(probabilities per row index, loss, LoRA gradients) of one batch."""
    model.zero_grad(set_to_none=True)
    logits = option_logits(model, batch)
    loss = KLDivergenceLoss()(logits, batch["target"], batch["option_mask"])
    loss.backward()
    probs = masked_softmax(logits.detach(), batch["option_mask"])
    per_row = {int(r): p[m] for r, p, m in zip(batch["row_index"], probs, batch["option_mask"])}
    grads = {clean_param_name(n): p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return per_row, loss.item(), grads


def assert_same(per_row, shared):
    (p1, l1, g1), (p2, l2, g2) = per_row, shared
    assert p1.keys() == p2.keys()
    assert max(float((p1[r] - p2[r]).abs().max()) for r in p1) < TOLERANCE
    assert abs(l1 - l2) < TOLERANCE
    assert g1.keys() == g2.keys() and len(g1) == 8  # 2 layers x (q, v) x (A, B)
    assert max(float((g1[n] - g2[n]).abs().max()) for n in g1) < TOLERANCE
    assert max(float(g.abs().max()) for g in g1.values()) > 1e-3  # the gradients compared are not all zero


# ---------------------------------------------------------------------------------------------- the prompt
def _row(raw):
    return parse_row(raw, path="x.json", index=0, subset_names={"valid": "valid"},
                     country_pattern=re.compile(ENGLISH_COUNTRY_PATTERN))


def test_question_first_prompt_plain_and_chat(tiny_tokenizer):
    row = _row(paper_row())
    user = ("How important is God in your life? \nHere are the options: \n"
            "(A)Not at all important, (B)2, (C)Very important\n\n"
            "How would someone from Andorra answer the following question:")
    prefix = " If had to select one of the options, my answer would be ("
    assert PromptFormat(order="question_first").render(row) == user + prefix
    chat = PromptFormat(style="chat", order="question_first").render(row, tiny_tokenizer)
    assert chat == "<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n" + prefix
    # the paper's order stays the default and its text
    assert PromptFormat().render(row) == PromptFormat(order="paper").render(row) == (
        "How would someone from Andorra answer the following question:\n\nHow important is God in your life? "
        "\nHere are the options: \n(A)Not at all important, (B)2, (C)Very important" + prefix)
    with pytest.raises(ValueError, match="prompt_order"):
        PromptFormat(order="country_last")


def test_prefix_key_groups_by_question_and_options_only_in_question_first():
    fmt = PromptFormat(order="question_first")
    assert fmt.prefix_key("Q? ", ["(A)x", "(B)y"]) == fmt.prefix_key("Q? ", ("(A)x", "(B)y"))
    assert fmt.prefix_key("Q? ", ["(A)x", "(B)y"]) != fmt.prefix_key("Q? ", ["(A)y", "(B)x"])
    assert fmt.prefix_key("Q? ", ["(A)x", "(B)y"]) != fmt.prefix_key("R? ", ["(A)x", "(B)y"])
    assert PromptFormat().prefix_key("Q? ", ["(A)x"]) == PromptFormat().prefix_key("R? ", ["(A)z"])


# ---------------------------------------------------------------------------------------------- grouping
def _encoded(groups_and_ids):
    return [EncodedRow(input_ids=ids, letter_ids=[5, 6], target=[0.5, 0.5], prefix_group=g)
            for g, ids in groups_and_ids]


def test_collator_splits_each_group_at_its_common_prefix_and_never_mixes_groups():
    rows = _encoded([
        (0, [1, 2, 3, 4, 10]), (1, [1, 2, 7, 8, 9, 11]), (0, [1, 2, 3, 4, 12, 13]), (1, [1, 2, 7, 8, 9]),
        (2, [1, 2, 3]),  # alone in its group: all but its last token is its prefix
    ])
    batch = SharedPrefixCollator(pad_token_id=0, min_saved_fraction=0.0, pack_max_tokens=0)(list(enumerate(rows)))
    assert batch["row_group"].tolist() == [0, 1, 0, 1, 2]
    assert batch["prefix_lengths"].tolist() == [4, 4, 2]  # group 1 keeps one own token for [1, 2, 7, 8, 9]
    # rows 0 and 1 share [1, 2] too, but different groups never share a prefix
    for b, row in enumerate(rows):
        g = int(batch["row_group"][b])
        length = int(batch["prefix_lengths"][g])
        assert batch["prefix_ids"][g, :length].tolist() == row.input_ids[:length]
        assert batch["prefix_mask"][g].tolist() == [1] * length + [0] * (batch["prefix_ids"].shape[1] - length)
        suffix = batch["input_ids"][b][batch["attention_mask"][b].bool()].tolist()
        assert row.input_ids[:length] + suffix == row.input_ids and suffix  # exact, at least one own token
        assert int(batch["answer_index"][b]) == len(suffix) - 1
    assert split_prefix([[1, 2], [1, 2]]) == 1 and split_prefix([[3], [3, 4]]) == 0 and split_prefix([[1, 2, 3]]) == 2


def test_packed_layout_holds_each_prompt_once_at_its_own_positions():
    rows = _encoded([(0, [1, 2, 3, 4, 10]), (1, [1, 2, 7, 8, 9, 11]), (0, [1, 2, 3, 4, 12, 13]), (2, [5, 6])])
    items = list(enumerate(rows))
    collate = SharedPrefixCollator(pad_token_id=0, min_saved_fraction=0.0, pack_max_tokens=14)
    batch = collate(items)  # 4 + 5 + 1 prefix tokens, then 1 + 1 + 2 + 1 suffix tokens: 15 > 14
    assert "prefix_ids" in batch and "packed_ids" not in batch
    collate.pack_max_tokens = 15
    batch = collate(items)
    assert "packed_ids" in batch and "input_ids" not in batch
    ids, positions = batch["packed_ids"][0].tolist(), batch["packed_positions"][0].tolist()
    group, row = batch["packed_group"].tolist(), batch["packed_row"].tolist()
    assert len(ids) == 15 and row[:10] == [-1] * 10 and group == [0] * 4 + [1] * 5 + [2] + [0, 1, 0, 0, 2]
    for b, encoded in enumerate(rows):  # the row's prompt: its group's prefix tokens, then its own, in order
        g = group[ids.index(encoded.input_ids[-1], 10) if b != 2 else 13]
        mine = [t for t in range(15) if group[t] == g and row[t] in (-1, b)]
        assert [ids[t] for t in mine] == encoded.input_ids and [positions[t] for t in mine] == list(range(len(mine)))
        assert int(batch["answer_index"][b]) == mine[-1]
    assert torch.equal(batch["target"], PadCollator(0)(items)["target"])
    with pytest.raises(ValueError, match="pack_max_tokens"):
        SharedPrefixCollator(0, pack_max_tokens=-1)


def test_a_packed_batch_is_padded_to_a_length_multiple_with_pads_no_real_token_sees():
    """pack_length_multiple: the packed sequence ends in pads (their own group, -1) up to the next multiple; the real
    tokens' layout is the unpadded one, and no real token attends to a pad."""
    from simlab.model.shared_prefix import packed_attention_mask

    rows = _encoded([(0, [1, 2, 3, 4, 10]), (1, [1, 2, 7, 8, 9, 11]), (0, [1, 2, 3, 4, 12, 13]), (2, [5, 6])])
    items = list(enumerate(rows))
    plain = SharedPrefixCollator(pad_token_id=0, min_saved_fraction=0.0, pack_max_tokens=15)(items)
    padded = SharedPrefixCollator(pad_token_id=99, min_saved_fraction=0.0, pack_max_tokens=15,
                                  pack_length_multiple=8)(items)
    assert padded["packed_ids"].shape == (1, 16) and plain["packed_ids"].shape == (1, 15)  # 15 real tokens -> 16
    assert padded["packed_ids"][0, 15] == 99 and padded["packed_positions"][0, 15] == 0
    assert padded["packed_group"][15] == -1 and padded["packed_row"][15] == -1
    for key in ("packed_ids", "packed_positions"):
        assert torch.equal(padded[key][:, :15], plain[key])
    for key in ("packed_group", "packed_row", "answer_index", "target", "row_index"):
        assert torch.equal(padded[key][: len(plain[key])], plain[key])
    allowed = packed_attention_mask(padded["packed_group"], padded["packed_row"], torch.float32, "sdpa")[0, 0]
    assert not allowed[:15, 15].any() and allowed[15, 15]  # a pad sees itself (no empty softmax), nobody sees it
    exact = SharedPrefixCollator(0, 0.0, pack_max_tokens=15, pack_length_multiple=5)(items)
    assert exact["packed_ids"].shape == (1, 15)  # already a multiple: no pad
    with pytest.raises(ValueError, match="pack_length_multiple must be >= 1"):
        SharedPrefixCollator(0, pack_length_multiple=0)


def test_packed_attention_mask_is_causal_within_each_prompt_only():
    from simlab.model.shared_prefix import packed_attention_mask

    group = torch.tensor([0, 0, 1, 1, 0, 0, 1])  # prefixes [a0 a1] [b0 b1]; row 0 (2 tokens, group 0), rows 1, 2
    row = torch.tensor([-1, -1, -1, -1, 0, 0, 1])
    allowed = packed_attention_mask(group, row, torch.float32, "sdpa")[0, 0]
    assert allowed.tolist()[5] == [True, True, False, False, True, True, False]  # row 0's 2nd token
    assert allowed.tolist()[6] == [False, False, True, True, False, False, True]  # row 1: group 1's prefix, itself
    assert allowed.tolist()[1] == [True, True] + [False] * 5
    assert allowed.tolist()[2] == [False, False, True] + [False] * 4
    additive = packed_attention_mask(group, row, torch.float32, "eager")[0, 0]
    assert torch.equal(additive == 0, allowed)


def test_collator_falls_back_to_per_row_batches_when_sharing_saves_little():
    rows = _encoded([(0, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), (0, [1, 11, 12, 13, 14, 15, 16, 17, 18, 19])])
    items = list(enumerate(rows))
    assert "prefix_ids" not in SharedPrefixCollator(0)(items)  # 1 token of 20 saved < 10%
    assert set(SharedPrefixCollator(0)(items)) == set(PadCollator(0)(items))
    assert "prefix_ids" in SharedPrefixCollator(0, min_saved_fraction=0.05, pack_max_tokens=0)(items)
    assert "packed_ids" in SharedPrefixCollator(0, min_saved_fraction=0.05)(items)


def test_datamodule_groups_question_first_rows_by_question(tmp_path, tiny_tokenizer):
    dm = datamodule(tmp_path, tiny_tokenizer, prompt_order="question_first", shared_prefix=True, eval_batch_size=16,
                    pack_max_tokens=0)
    rows, encoded = dm.rows["V"], dm.datasets["V"].encoded
    by_group: dict[int, set[str]] = {}
    for row, e in zip(rows, encoded):
        by_group.setdefault(e.prefix_group, set()).add(row.question_id)
    assert len(by_group) == 4 and all(len(q) == 1 for q in by_group.values())
    loader = dm.test_dataloader()[0]
    assert isinstance(loader.batch_sampler, PrefixGroupedBatchSampler)
    seen = []
    for batch in loader:
        for g in range(len(batch["prefix_lengths"])):
            members = batch["row_index"][batch["row_group"] == g].tolist()
            assert len({rows[i].question_id for i in members}) == 1  # one question per prefix
            assert batch["prefix_lengths"][g] > 20  # the question and its options are shared
        seen.extend(batch["row_index"].tolist())
    assert sorted(seen) == list(range(len(rows)))
    dm.pack_max_tokens = 10**6  # data.pack_max_tokens reaches the collator: the same batches, packed
    packed = list(dm.test_dataloader()[0])
    assert all("packed_ids" in b for b in packed) and [b["row_index"].tolist() for b in packed] == [
        b["row_index"].tolist() for b in loader]
    # the paper's order: all rows one group (their common prefix is the chat head and "How would someone from")
    paper = datamodule(tmp_path, tiny_tokenizer, shared_prefix=True)
    assert {e.prefix_group for e in paper.datasets["V"].encoded} == {0}


def test_training_sampler_is_deterministic_per_epoch_and_keeps_full_batches_to_one_group():
    lengths = [(i * 7) % 23 + 1 for i in range(63)]
    groups = [i % 5 for i in range(63)]  # groups of 13, 13, 13, 12, 12 rows
    sampler = PrefixGroupedBatchSampler(lengths, groups, 4, shuffle=True, seed=3)
    first = list(sampler)
    assert first == list(sampler) == list(PrefixGroupedBatchSampler(lengths, groups, 4, shuffle=True, seed=3))
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and second == list(sampler)
    for batches in (first, second):
        assert len(batches) == len(sampler) == 15 + 1  # 3 full batches per group, 1 of the 3 rows left over
        assert sorted(i for b in batches for i in b) == list(range(63))
        full = [b for b in batches if len(b) == 4]
        assert len(full) == 15 and all(len({groups[i] for i in b}) == 1 for b in full)
        rest = [b for b in batches if len(b) < 4]
        assert len(rest) == 1 and len({groups[i] for i in rest[0]}) == 3  # one row of each of groups 0, 1, 2
    # one group: exactly the length-grouped sampler's batches (so the paper's prompt trains as before)
    for epoch, factor in ((0, 32), (2, 32), (1, 3)):  # factor 3: several mega-batches
        one = PrefixGroupedBatchSampler(lengths, [0] * 63, 4, shuffle=True, seed=3, group_factor=factor)
        base = LengthGroupedBatchSampler(lengths, 4, shuffle=True, seed=3, group_factor=factor)
        one.set_epoch(epoch), base.set_epoch(epoch)
        assert list(one) == list(base) and len(one) == len(base)


@pytest.mark.parametrize("shuffle", [True, False])
def test_prefix_sampler_shards_across_ranks_like_the_length_grouped_one(shuffle):
    lengths = [(i * 7) % 23 + 1 for i in range(45)]
    groups = [i // 9 for i in range(45)]
    whole = list(PrefixGroupedBatchSampler(lengths, groups, 4, shuffle=shuffle, seed=3))
    shards = [list(PrefixGroupedBatchSampler(lengths, groups, 4, shuffle=shuffle, seed=3, num_replicas=3, rank=r))
              for r in range(3)]
    for r, shard in enumerate(shards):
        assert len(shard) == len(PrefixGroupedBatchSampler(lengths, groups, 4, shuffle=shuffle, num_replicas=3, rank=r))
    if shuffle:
        padded = whole + whole[: (-len(whole)) % 3]
        assert all(shard == padded[r::3] for r, shard in enumerate(shards))
    else:
        assert sorted(i for s in shards for b in s for i in b) == list(range(45))


def test_evaluation_sampler_packs_small_groups_and_scores_every_row_once():
    lengths = [10 + i % 3 for i in range(40)]
    groups = [0] * 20 + [1] * 8 + [2] * 8 + [3] * 4  # 20 rows = 16 + 4; three small groups
    batches = list(PrefixGroupedBatchSampler(lengths, groups, 16, shuffle=False))
    assert sorted(i for b in batches for i in b) == list(range(40))
    assert all(len(b) <= 16 for b in batches)
    assert len(batches) == 3  # [16 of group 0], [4 of group 0 + 8 of group 1 + 4 of group 3]... packed greedily
    for b in batches:
        runs = [groups[i] for i in b]
        assert runs == sorted(runs, key=runs.index)  # each group's rows contiguous within a batch


# ---------------------------------------------------------------------------------------------- exactness
LAYOUTS = {"two_pass": 0, "packed": 10**6}  # SharedPrefixCollator's pack_max_tokens for each layout


def groups_of(batch) -> int:
    return int(batch["packed_group"].max()) + 1 if "packed_ids" in batch else len(batch["prefix_lengths"])


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("order,style", [("question_first", "chat"), ("question_first", "plain"), ("paper", "chat")])
def test_shared_prefix_equals_per_row_probabilities_loss_and_lora_gradients(tmp_path, tiny_tokenizer, tiny_llama_dir,
                                                                           order, style, layout):
    dm = datamodule(tmp_path, tiny_tokenizer, prompt_order=order, prompt_style=style)
    model = lora_model(tiny_llama_dir)
    model.eval()  # dropout off; gradients still flow
    items = list(enumerate(dm.datasets["V"].encoded))
    for chosen in (items[:7], items[3:12], items):  # one question; two questions; all four in one batch
        shared = SharedPrefixCollator(tiny_tokenizer.pad_token_id, 0.0, pack_max_tokens=LAYOUTS[layout])(chosen)
        assert ("packed_ids" in shared) == (layout == "packed")
        assert groups_of(shared) == (1 if order == "paper" else len({e.prefix_group for _, e in chosen}))
        assert_same(scores(model, PadCollator(tiny_tokenizer.pad_token_id)(chosen)), scores(model, shared))


def test_padded_packed_batches_equal_per_row_probabilities_loss_and_lora_gradients(tmp_path, tiny_tokenizer,
                                                                                    tiny_llama_dir):
    """A packed batch padded to a length multiple (CUDA graphs' few shapes) scores as per-row batches do."""
    dm = datamodule(tmp_path, tiny_tokenizer, prompt_order="question_first")
    model = lora_model(tiny_llama_dir)
    model.eval()
    items = list(enumerate(dm.datasets["V"].encoded))
    for chosen in (items[:7], items):
        padded = SharedPrefixCollator(tiny_tokenizer.pad_token_id, 0.0, pack_max_tokens=10**6,
                                      pack_length_multiple=64)(chosen)
        unpadded = SharedPrefixCollator(tiny_tokenizer.pad_token_id, 0.0, pack_max_tokens=10**6)(chosen)
        length = padded["packed_ids"].shape[1]
        assert length % 64 == 0 and length > unpadded["packed_ids"].shape[1]
        assert_same(scores(model, PadCollator(tiny_tokenizer.pad_token_id)(chosen)), scores(model, padded))


def test_shared_prefix_is_exact_with_ctrl_and_shuffled_options(tmp_path, tiny_tokenizer, tiny_llama_dir):
    dm = datamodule(tmp_path, tiny_tokenizer, prompt_order="question_first", country_control=True,
                    shuffle_options=True, seed=1)
    rows, encoded = dm.rows["V"], dm.datasets["V"].encoded
    groups = {}
    for row, e in zip(rows, encoded):  # shuffled options change the prefix: one group per (question, option order)
        groups.setdefault(e.prefix_group, set()).add((row.question_id, row.options))
    assert all(len(v) == 1 for v in groups.values()) and len(groups) > 4
    model = lora_model(tiny_llama_dir)
    model.eval()
    items = list(enumerate(encoded))
    expected = scores(model, PadCollator(tiny_tokenizer.pad_token_id)(items))
    for pack in LAYOUTS.values():
        assert_same(expected, scores(model, SharedPrefixCollator(tiny_tokenizer.pad_token_id, 0.0, pack)(items)))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_bf16_cpu_training_attention_is_exact_on_shared_prefix_batches(tmp_path, tiny_tokenizer, tiny_llama_dir,
                                                                           monkeypatch, layout):
    """simlab_sdpa's matrix products (simlab.model.cpu_attention) with the masks shared-prefix batches pass: forced
    on in float32 (where it would defer to sdpa), they must give per-row sdpa's probabilities, loss and LoRA
    gradients to float32's tolerance, in the packed layout and in two passes through a cache."""
    from simlab.model import cpu_attention

    dm = datamodule(tmp_path, tiny_tokenizer, prompt_order="question_first")
    model = lora_model(tiny_llama_dir)
    model.eval()
    items = list(enumerate(dm.datasets["V"].encoded))
    expected = scores(model, PadCollator(tiny_tokenizer.pad_token_id)(items))
    calls = []
    monkeypatch.setattr(cpu_attention, "uses_matmul", lambda *args: calls.append(1) or torch.is_grad_enabled())
    assert cpu_attention.use_for_training(model.get_base_model())
    try:
        shared = SharedPrefixCollator(tiny_tokenizer.pad_token_id, 0.0, pack_max_tokens=LAYOUTS[layout])(items)
        assert_same(expected, scores(model, shared))
    finally:
        model.get_base_model().set_attn_implementation("sdpa")
    assert len(calls) == (2 if layout == "packed" else 4)  # two layers; two passes each in the two-pass layout


def test_eager_attention_and_inference_mode(tmp_path, tiny_tokenizer, tiny_llama_dir):
    dm = datamodule(tmp_path, tiny_tokenizer, prompt_order="question_first")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32, attn_implementation="eager")
    items = list(enumerate(dm.datasets["V"].encoded))
    for pack in LAYOUTS.values():
        with torch.inference_mode():
            a = option_logits(model, PadCollator(tiny_tokenizer.pad_token_id)(items))
            batch = SharedPrefixCollator(tiny_tokenizer.pad_token_id, 0.0, pack)(items)
            b = option_logits(model, batch)
        mask = batch["option_mask"]
        assert float((masked_softmax(a, mask) - masked_softmax(b, mask)).abs().max()) < TOLERANCE


def test_activation_checkpointing_non_reentrant_is_exact_and_reentrant_is_refused(tmp_path, tiny_tokenizer,
                                                                                 tiny_llama_dir):
    from functools import partial

    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl,
        apply_activation_checkpointing,
        checkpoint_wrapper,
    )
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    dm = datamodule(tmp_path, tiny_tokenizer, prompt_order="question_first")
    items = list(enumerate(dm.datasets["V"].encoded))[:14]  # two questions
    shared = SharedPrefixCollator(tiny_tokenizer.pad_token_id, 0.0, pack_max_tokens=0)(items)
    packed = SharedPrefixCollator(tiny_tokenizer.pad_token_id, 0.0, pack_max_tokens=10**6)(items)
    model = lora_model(tiny_llama_dir)
    model.eval()
    expected = scores(model, PadCollator(tiny_tokenizer.pad_token_id)(items))
    # as trainer=fsdp applies it: torch's checkpoint_wrapper (non-reentrant) around each decoder layer
    apply_activation_checkpointing(model, check_fn=lambda m: isinstance(m, LlamaDecoderLayer))
    assert_same(expected, scores(model, shared))
    assert_same(expected, scores(model, packed))

    reentrant = lora_model(tiny_llama_dir)
    apply_activation_checkpointing(
        reentrant, checkpoint_wrapper_fn=partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.REENTRANT),
        check_fn=lambda m: isinstance(m, LlamaDecoderLayer),
    )
    with pytest.raises(SharedPrefixUnsupported, match="reentrant"):
        option_logits(reentrant, shared)
    with torch.no_grad():  # without gradients there is nothing to lose: allowed
        option_logits(reentrant, shared)

    hf = lora_model(tiny_llama_dir)
    hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    hf.train()
    with pytest.raises(SharedPrefixUnsupported, match="gradient checkpointing"):
        option_logits(hf, shared)
    assert_same(expected, scores(hf, packed))  # one ordinary decoder call: any checkpointing is exact (no dropout)


def test_unsupported_attention_is_refused(tmp_path, tiny_tokenizer, tiny_llama_dir):
    dm = datamodule(tmp_path, tiny_tokenizer, prompt_order="question_first")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    model.config._attn_implementation = "flash_attention_2"
    batch = SharedPrefixCollator(tiny_tokenizer.pad_token_id, 0.0)(list(enumerate(dm.datasets["V"].encoded))[:4])
    with pytest.raises(SharedPrefixUnsupported, match="data.shared_prefix=false"):
        option_logits(model, batch)


def test_a_lightning_training_step_runs_on_shared_prefix_batches(tmp_path, tiny_tokenizer, tiny_llama_dir):
    from simlab.training.module import SurveyLitModule

    dm = datamodule(tmp_path, tiny_tokenizer, prompt_order="question_first", shared_prefix=True, batch_size=4)
    dm.train_subset = "V"
    module = SurveyLitModule(lora_model(tiny_llama_dir), KLDivergenceLoss())
    losses = []
    for pack, key in ((10**6, "packed_ids"), (0, "prefix_ids")):
        dm.pack_max_tokens = pack
        batch = next(iter(dm.train_dataloader()))
        assert key in batch and len(batch["row_index"]) == 4
        loss = module.training_step(batch, 0)
        loss.backward()
        losses.append(float(loss.detach()))
    assert all(map(math.isfinite, losses)) and abs(losses[0] - losses[1]) < TOLERANCE


def test_fsdp_with_activation_checkpointing_matches_per_row(tmp_path, tiny_llama_dir):
    """FSDP on CPU (gloo, 2 ranks), decoder layers and LoRA matrices as units, non-reentrant activation
    checkpointing: each unit runs twice per step (prefix, then suffixes) or once (packed); two SGD steps land on the
    same weights in both layouts."""
    import json
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "fsdp.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "fsdp_prefix_worker.py"), str(tiny_llama_dir), str(tmp_path), str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    report = json.loads(out.read_text())
    assert report["layouts"] == {"per-row": "rows", "shared": "prefix_ids", "packed": "packed_ids"}
    per_row, *shared_layouts = report["losses"]
    assert per_row[0] != per_row[1]  # the first step moved the weights
    for name, shared in zip(("shared", "packed"), shared_layouts):
        assert max(abs(a - b) for a, b in zip(per_row, shared)) < TOLERANCE, name
        assert report["weights"] == 8 and report[name]["same_names"], name
        assert report[name]["max_weight_difference"] < TOLERANCE, (name, report[name])


def test_simulator_renders_like_training_and_shared_prefix_gives_the_per_row_shares(tiny_llama_dir, shared_data):
    from simlab.model import load_language_model
    from simlab.simulate import Simulator, make_question

    lm = load_language_model(path=str(tiny_llama_dir))
    questions = [make_question("Do you like tea?", ["Yes", "No"], "tea"),
                 make_question("How much do you trust your neighbours?", ["A lot", "Some", "Not at all"], "trust")]
    countries = ["Japan", "Kenya", "Brazil", "Germany", "Indonesia"]
    kwargs = dict(prompt_style="chat", prompt_order="question_first", data_root=shared_data)
    per_row = Simulator(lm, shared_prefix=False, batch_size=3, **kwargs)
    shared = Simulator(lm, shared_prefix=True, batch_size=16, **kwargs)  # both questions in one batch: two prefixes
    text = shared.prompt_text(questions[0], "Japan")
    assert ("Here are the options: \n(A)Yes, (B)No\n\n"
            "How would someone from Japan answer the following question:") in text
    assert text == PromptFormat(style="chat", order="question_first").render_parts(
        "How would someone from Japan answer the following question:\n\n", questions[0].prompt_input,
        questions[0].lettered_options, lm.tokenizer)  # the datamodule's rendering of the same row
    a, b = per_row.predict_questions(questions, countries), shared.predict_questions(questions, countries)
    assert list(a["country"]) == list(b["country"]) and len(a) == 5 * (2 + 3)
    assert float((a["share"] - b["share"]).abs().max()) < TOLERANCE
    assert b.attrs["prompt_order"] == "question_first"


def test_cache_argument_follows_the_decoders_signature_and_refuses_a_decoder_without_one():
    """transformers renamed the decoder's ``past_key_values`` to ``cache`` (5.25); an unknown keyword would vanish
    into ``**kwargs`` and leave the suffixes without their prefix, so the name comes from the signature."""
    from simlab.model.shared_prefix import cache_argument

    class Old(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, **kwargs):
            return input_ids

    class New(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, **kwargs):
            return input_ids

    class Neither(torch.nn.Module):
        def forward(self, input_ids=None, **kwargs):
            return input_ids

    assert cache_argument(Old()) == "past_key_values"
    assert cache_argument(New()) == "cache"
    with pytest.raises(SharedPrefixUnsupported, match="neither cache nor past_key_values"):
        cache_argument(Neither())


def test_merged_test_subsets_compute_a_shared_question_once_and_score_as_separate_loaders(tmp_path, tiny_tokenizer,
                                                                                          tiny_llama_dir):
    """data.merge_test_subsets: two test subsets asking the same questions of other countries go through one
    loader, each question's prefix in one batch with both subsets' countries; every subset's scores and
    predictions equal those of one loader per subset (float rounding of other batches)."""
    import pytorch_lightning as pl

    from simlab.training.module import SurveyLitModule

    rows = ([dict(r, data_type="test_a") for r in survey_rows(countries=COUNTRIES[:4])]
            + [dict(r, data_type="test_b") for r in survey_rows(countries=COUNTRIES[4:])])
    results = {}
    for merge in (False, True):
        write_rows(tmp_path / "rows.json", rows)
        dm = SurveyDataModule(tiny_tokenizer, ["rows.json"], {"test_a": "A", "test_b": "B"}, None, None, ["A", "B"],
                              root=str(tmp_path), prompt_style="chat", prompt_order="question_first",
                              shared_prefix=True, eval_batch_size=8, pack_max_tokens=0, merge_test_subsets=merge)
        dm.setup()
        assert dm.test_parts() == ([[("A", 0, 16), ("B", 16, 28)]] if merge else [[("A", 0, 16)], [("B", 0, 12)]])
        loaders = dm.test_dataloader()
        assert len(loaders) == (1 if merge else 2)
        if merge:  # a batch holds one question's rows of both subsets, its prefix once
            both = [b for b in loaders[0] if ((b["row_index"] < 16).any() and (b["row_index"] >= 16).any()
                                              and len(b["prefix_lengths"]) == 1)]
            assert both
        module = SurveyLitModule(lora_model(tiny_llama_dir), KLDivergenceLoss(), test_subsets=["A", "B"])
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.test(module, datamodule=dm, verbose=False)
        results[merge] = (module.test_results, module.test_predictions)
    (separate, separate_rows), (merged, merged_rows) = results[False], results[True]
    assert list(merged) == ["A", "B"] and merged["A"]["n"] == 16 and merged["B"]["n"] == 12
    for subset in ("A", "B"):
        assert merged[subset] == pytest.approx(separate[subset], abs=TOLERANCE)
        assert merged_rows[subset].keys() == separate_rows[subset].keys() == set(range(merged[subset]["n"]))
        for row, probs in merged_rows[subset].items():
            assert probs == pytest.approx(separate_rows[subset][row], abs=TOLERANCE)
