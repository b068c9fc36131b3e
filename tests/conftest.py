"""Shared fixtures: tiny tokenizers and a tiny random Llama built in code and saved to disk, so the real
loading path (from_pretrained on a folder) is exercised without any downloaded weights."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Tests download nothing from the Hugging Face hub (huggingface_hub reads this once, at import, so it is set first)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# trainer.precision=auto times a bf16 and a float32 matmul; under the load of parallel tests that timing can pick
# bf16 in one run and float32 in the run it is compared with. Tests of auto itself run without it (auto_precision).
os.environ.setdefault("SIMLAB_PRECISION", "32-true")

REPO = Path(__file__).resolve().parents[1]
# the survey data as simlab finds it: $SIMLAB_DATA, else the copy shipped in the package (xz-compressed)
SHARED_DATA = Path(os.environ.get("SIMLAB_DATA") or REPO / "simlab" / "data" / "survey")


def auto_precision(env: dict | None = None) -> dict:
    """``env`` (default: this process's) without SIMLAB_PRECISION: trainer.precision=auto as users get it."""
    return {k: v for k, v in (os.environ if env is None else env).items() if k != "SIMLAB_PRECISION"}


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


@pytest.fixture(autouse=True)
def no_hydra_state_left():
    """Hydra's process-wide state (its global instance, the job config a test set as a run would) is cleared after
    each test: with test files sharing a worker process (pytest -n), one test's leftover would fail another's check
    that simlab itself leaves nothing behind (tests/test_api.py), depending on which files share a worker."""
    yield
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tiny_tokenizer)


def read_data_json(relative: str):
    """A file of the survey data (plain or compressed), parsed."""
    from simlab.data.files import read_data_json as read

    return read(relative, SHARED_DATA)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The survey data root: the shipped copy, or $SIMLAB_DATA. Never skipped: without the data the tests fail."""
    from simlab.data.files import find_data_file

    find_data_file("wvs7/sft_wvs_valid.json", SHARED_DATA)  # a clear error if the root lacks the data
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


# ---------------------------------------------------------------- the paper's model families, in miniature
# Templates copied from the families' tokenizer_config.json on the hub (Llama-3-Instruct; DeepSeek-R1-Distill,
# whose generation prompt opens "<think>\n"): the configs must work with the tokenizers as shipped.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
DEEPSEEK_R1_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(system_prompt='') %}{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}"
    "{%- for message in messages %}{%- if message['role'] == 'user' %}{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}{{'<｜Assistant｜>' + "
    "message['content'] + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}"
    "{% if add_generation_prompt %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
)
FAMILY_CORPUS = CORPUS + [
    "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z USER ASSISTANT system user assistant"] * 10


def build_byte_bpe(special_tokens, bos: str, eos: str, pad: str, chat_template: str | None, add_bos: bool):
    """Byte-level BPE as Llama-3 and Qwen2 use (GPT-2 pre-tokenization), with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=list(special_tokens), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(FAMILY_CORPUS, trainer=trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad)
    fast.chat_template = chat_template
    return fast


def build_sentencepiece_llama(folder: Path):
    """A real SentencePiece BPE model with byte fallback (as Llama-2/Vicuna), loaded as transformers'
    LlamaTokenizer (converted to its fast form). No chat template: Vicuna ships none."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(FAMILY_CORPUS), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "sp"), vocab_size=500, model_type="bpe", byte_fallback=True,
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
    )
    (folder / "sp.model").rename(folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "legacy": False,
    }))
    return AutoTokenizer.from_pretrained(folder)


def save_tiny_causal_lm(folder: Path, tokenizer, architecture: str = "llama", **settings) -> Path:
    """A 2-layer random LlamaForCausalLM or Qwen2ForCausalLM sized to the tokenizer, saved with it; ``settings``
    replace config values (heads, rope theta...). Biases (Qwen2's q/k/v) are drawn at random, not left zero."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM),
                             "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[architecture]
    torch.manual_seed(0)
    values = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    config = config_cls(**{**values, **settings})
    model = model_cls(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(std=0.1)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_vicuna(folder: Path) -> Path:
    tokenizer = build_sentencepiece_llama(folder / "spm")
    return save_tiny_causal_lm(folder / "model", tokenizer, "llama")


def tiny_llama3(folder: Path) -> Path:
    special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tokenizer = build_byte_bpe(special, "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>", LLAMA3_TEMPLATE, True)
    return save_tiny_causal_lm(folder, tokenizer, "llama")


def tiny_dsqwen(folder: Path) -> Path:
    special = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
               "<think>", "</think>"]
    tokenizer = build_byte_bpe(
        special, "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜end▁of▁sentence｜>", DEEPSEEK_R1_TEMPLATE, True
    )
    return save_tiny_causal_lm(folder, tokenizer, "qwen2")


def compose_config(*overrides: str):
    """The real conf/ composed with the Hydra compose API (as run.py would, without making a run directory)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))
