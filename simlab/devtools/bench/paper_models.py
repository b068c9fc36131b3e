"""The paper's models without their weights, for the paper-scale device check (:mod:`.paper_scale`).

A model is built at random from the architecture written in its config (``conf/model/<name>.yaml``,
``architecture:``, the hub's ``config.json`` shape, :func:`architecture_config`) directly on the target device, so
an 8B or 32B model never passes through host memory and no weights need to travel to a lent GPU (64 MiB carry
limit).

The prompts need a tokenizer and the real ones are not here (no hub access). The stand-in is the embedded
SmolLM2's byte-level BPE (49,152 tokens, GPT-2 style like Llama-3's and Qwen2's, 3.5 MB) with the family's special
tokens added as single tokens and the family's chat template, so a prompt has the real one's structure and a
length close to it (a 49k vocabulary splits English into somewhat more tokens than Llama-3's 128k or Qwen2's 152k:
the check prints the token counts it used). ``--tiny`` shrinks the architecture (same class and family, a few
small layers) to run the same code on a CPU in the test suite.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch

# The Llama-3-Instruct chat template as its tokenizer_config.json ships it (llama3_instruct's config uses the
# tokenizer's own template, which the stand-in tokenizer lacks). tests/test_device_check.py checks it equals the
# copy in tests/conftest.py.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """A model family's special tokens (each one token in the real tokenizer) and the template its config lacks."""

    bos: str
    eos: str
    pad: str
    specials: tuple[str, ...]
    template: str | None = None  # used when the model config's chat_template is null


FAMILIES = {
    "llama3": Family("<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>",
                     ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                      "<|eot_id|>"), LLAMA3_CHAT_TEMPLATE),
    "vicuna": Family("<s>", "</s>", "<unk>", ("<s>", "</s>", "<unk>")),
    "dsqwen": Family("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
                     ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>",
                      "</think>")),
}


def family_of(name: str) -> Family:
    """The family of a paper model config name (``llama3_instruct`` -> llama3, ``dsqwen32b`` -> dsqwen)."""
    for prefix, family in FAMILIES.items():
        if name.startswith(prefix):
            return family
    raise ValueError(f"model {name!r} is not one of the paper's families ({', '.join(FAMILIES)})")


def stand_in_tokenizer(folder: str | Path, name: str, chat_template: str | None):
    """The SmolLM2 tokenizer in ``folder`` dressed as model ``name``'s family: its special tokens added, its BOS,
    EOS and pad, and ``chat_template`` (the model config's; null: the family's own)."""
    from transformers import AutoTokenizer

    family = family_of(name)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.add_special_tokens({"additional_special_tokens": list(family.specials)})
    tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = family.bos, family.eos, family.pad
    tokenizer.chat_template = chat_template or family.template or tokenizer.chat_template
    return tokenizer


def architecture_config(architecture: dict):
    """The transformers config of a model config's ``architecture:`` block (plain data, as the hub's config.json:
    ``model_type`` and the shape), through ``AutoConfig.for_model``: a lookup of the model type, no code named."""
    from transformers import AutoConfig

    fields = dict(architecture)
    model_type = fields.pop("model_type", None)
    if model_type is None:
        raise ValueError("an architecture: block needs model_type (llama, qwen2, ...), as the hub's config.json")
    return AutoConfig.for_model(model_type, **fields)


def tiny_architecture(config, vocab_size: int):
    """The architecture shrunk for a CPU: 2 layers of hidden 64, the head layout kept (grouped-query attention
    stays grouped), same class, attention bias and norms; vocabulary ``vocab_size``."""
    config = copy.deepcopy(config)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    config.num_attention_heads = 4
    config.num_key_value_heads = 4 if kv_heads == heads else max(1, 4 * kv_heads // heads)
    config.hidden_size, config.intermediate_size, config.num_hidden_layers = 64, 160, 2
    config.head_dim = 16
    if hasattr(config, "max_window_layers"):
        config.max_window_layers = 2
    config.vocab_size = vocab_size
    return config


@dataclass
class BuiltModel:
    model: torch.nn.Module
    parameters: int
    weights_gib: float
    seconds: float
    vocab_note: str


def build_random_model(config, tokenizer, device: torch.device, dtype: torch.dtype) -> BuiltModel:
    """A random ``AutoModelForCausalLM`` of ``config`` allocated and initialised on ``device`` in ``dtype`` (never in
    host memory for a GPU), pad/BOS/EOS ids set from the tokenizer. A vocabulary smaller than the tokenizer's
    (Vicuna's 32,000 against the stand-in's 49k) is enlarged to fit it, and the note says so."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(config)
    note = ""
    if len(tokenizer) > config.vocab_size:
        note = f"vocabulary enlarged from {config.vocab_size} to the stand-in tokenizer's {len(tokenizer)}"
        config.vocab_size = len(tokenizer)
    config.pad_token_id, config.bos_token_id = tokenizer.pad_token_id, tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    started = time.perf_counter()
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # what from_config(dtype=...) does, without its version-dependent keyword
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")  # shared prefixes need it
    finally:
        torch.set_default_dtype(before)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    parameters = sum(p.numel() for p in model.parameters())
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    return BuiltModel(model, parameters, weights, time.perf_counter() - started, note)
