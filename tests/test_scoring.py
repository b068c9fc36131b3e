"""option_logits must equal the full LM head's next-token logits at the answer slot, whatever the padding."""

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM

from simlab.data.batching import EncodedRow, PadCollator
from simlab.model import attach_lora
from simlab.model.scoring import option_logits
from simlab.training.losses import KLDivergenceLoss
from simlab.training.module import SurveyLitModule


def _rows(tokenizer, texts, letters="ABCD"):
    ids = {l: tokenizer(l, add_special_tokens=False)["input_ids"][0] for l in letters}
    rows = []
    for i, text in enumerate(texts):
        k = 2 + i % (len(letters) - 1)
        target = [1.0 / k] * k
        rows.append(EncodedRow(tokenizer(text)["input_ids"], [ids[l] for l in letters[:k]], target))
    return rows


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


def test_option_logits_match_full_vocabulary_logits(model, tiny_tokenizer):
    texts = ["short one (", "a much longer prompt about how important family is in your life (", "mid size ("]
    rows = _rows(tiny_tokenizer, texts)
    batch = PadCollator(tiny_tokenizer.pad_token_id)(list(enumerate(rows)))
    with torch.no_grad():
        scores = option_logits(model, batch)
        for b, row in enumerate(rows):
            full = model(input_ids=torch.tensor([row.input_ids])).logits[0, -1]
            k = len(row.letter_ids)
            torch.testing.assert_close(scores[b, :k], full[row.letter_ids], rtol=1e-4, atol=1e-5)


def test_padding_does_not_change_scores(model, tiny_tokenizer):
    rows = _rows(tiny_tokenizer, ["x (", "a longer prompt with many more words in it ("])
    collate = PadCollator(tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        together = option_logits(model, collate(list(enumerate(rows))))
        alone = option_logits(model, collate([(0, rows[0])]))
    torch.testing.assert_close(together[0, :2], alone[0, :2], rtol=1e-4, atol=1e-5)


def test_lora_training_step_moves_only_adapter_weights(tiny_llama_dir, tiny_tokenizer):
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    peft_model = attach_lora(base,
                             LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "v_proj"]))
    module = SurveyLitModule(peft_model, KLDivergenceLoss(), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    rows = _rows(tiny_tokenizer, ["one (", "two words (", "three more words ("])
    batch = PadCollator(tiny_tokenizer.pad_token_id)(list(enumerate(rows)))
    frozen_before = {n: p.detach().clone() for n, p in peft_model.named_parameters() if not p.requires_grad}
    trainable_before = {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    optimizer = module.configure_optimizers()
    loss = module.loss(option_logits(peft_model, batch), batch["target"], batch["option_mask"])
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(torch.equal(p, frozen_before[n]) for n, p in peft_model.named_parameters() if not p.requires_grad)
    moved = [n for n, p in peft_model.named_parameters() if p.requires_grad and not torch.equal(p, trainable_before[n])]
    assert moved and all("lora_" in n for n in moved)
