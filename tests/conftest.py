"""Shared fixtures: tiny tokenizers and a tiny random Llama built in code and saved to disk, so the real
loading path (from_pretrained on a folder) is exercised without any downloaded weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "How would someone from Andorra answer the following question:\n\n",
    "How important is God in your life? Please use this scale to indicate. \nHere are the options: \n",
    "(A)Very important, (B)Rather important, (C)Not very important, (D)Not at all important",
    " If had to select one of the options, my answer would be (",
    "For each of the following aspects, indicate how important it is in your life. Would you say it is",
    "Strongly agree, Agree, Disagree, Strongly disagree, Hard to say, Mentioned, Not mentioned, Yes, No",
    "the people of this country think government should trust family friends work religion politics",
] * 20


def build_tokenizer(vocab_size: int = 600, chat_template: str | None = CHATML_TEMPLATE):
    """A byte-level BPE tokenizer trained in code (letters after '(' are single tokens, as in GPT-2 style BPE)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="<|im_end|>",
    )
    if chat_template:
        fast.chat_template = chat_template
    return fast


def save_tiny_llama(folder: Path, tokenizer) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tiny_tokenizer)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "wvs7" / "sft_wvs_valid.json").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def write_rows(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


def paper_row(**changes) -> dict:
    """A valid row in the paper's format (the first valid-split row, shortened)."""
    row = {
        "id": "164",
        "instruction": "How would someone from Andorra answer the following question:\n\n",
        "input": "How important is God in your life? \nHere are the options: \n",
        "options": ["(A)Not at all important", "(B)2", "(C)Very important"],
        "options_dist": {"B": 30.0, "A": 50.0, "C": 20.0},
        "data_type": "valid",
    }
    row.update(changes)
    return row
