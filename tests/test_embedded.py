"""The embedded SmolLM2 (slow: converts the GGUF on first use, then loads from the cache)."""

import re

import pytest
import torch
from conftest import read_data_json

from simlab.data import PromptFormat, resolve_letter_ids
from simlab.data.batching import EncodedRow, PadCollator
from simlab.data.rows import ENGLISH_COUNTRY_PATTERN, parse_row
from simlab.metrics.divergences import masked_softmax
from simlab.model import embedded_gguf_file, load_language_model
from simlab.model.scoring import option_logits


def test_embedded_file_is_found():
    assert embedded_gguf_file("smollm2_135m_instruct").name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_unknown_embedded_model_is_an_error():
    with pytest.raises(ValueError, match="unknown embedded model"):
        embedded_gguf_file("gpt-17")


@pytest.mark.slow
def test_smollm2_letter_probabilities_on_a_real_prompt():
    lm = load_language_model(embedded="smollm2_135m_instruct")
    raw = read_data_json("wvs7/sft_wvs_valid.json")[0]
    row = parse_row(raw, path="valid", index=0, subset_names={"valid": "C1-Q2"},
                    country_pattern=re.compile(ENGLISH_COUNTRY_PATTERN))
    for style in ("plain", "chat"):
        prompt = PromptFormat(style=style)
        text = prompt.render(row, lm.tokenizer)
        letters = resolve_letter_ids(lm.tokenizer, text, row.letters, add_special_tokens=prompt.add_special_tokens)
        ids = lm.tokenizer(text, add_special_tokens=prompt.add_special_tokens)["input_ids"]
        encoded = EncodedRow(ids, [letters[l] for l in row.letters], list(row.target))
        batch = PadCollator(lm.tokenizer.pad_token_id or 0)([(0, encoded)])
        with torch.no_grad():
            probs = masked_softmax(option_logits(lm.model, batch), batch["option_mask"])[0]
            full = lm.model(input_ids=torch.tensor([ids])).logits[0, -1]
        assert torch.isfinite(probs).all() and probs.sum().item() == pytest.approx(1, abs=1e-5)
        expected = torch.softmax(full[[letters[l] for l in row.letters]], dim=-1)
        torch.testing.assert_close(probs, expected, rtol=1e-4, atol=1e-5)
