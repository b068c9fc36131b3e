"""Load a causal LM and its tokenizer from a local folder, a cached hub id, or an embedded model. Offline only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from .embedded import embedded_model_dir

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LanguageModel:
    """A causal LM, its tokenizer, and where it came from (written into every output)."""

    model: PreTrainedModel
    tokenizer: object
    source: str


def load_language_model(
    path: str | None = None,
    embedded: str | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> LanguageModel:
    """``path`` (a local HF folder, or a hub id already in the local HF cache) wins over ``embedded``."""
    if dtype not in DTYPES:
        raise ValueError(f"model dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if path:
        source = str(path)
        local = Path(path).expanduser()
        if local.exists() and not (local / "config.json").is_file():
            raise FileNotFoundError(f"model.path {local} exists but has no config.json: not an HF model folder")
        location, local_only = (str(local), True) if local.exists() else (str(path), True)
    elif embedded:
        source = f"embedded:{embedded}"
        location, local_only = str(embedded_model_dir(embedded)), True
    else:
        raise ValueError("set model.path (a local HF folder or cached hub id) or model.embedded")
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_only, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype=DTYPES[dtype], local_files_only=local_only, trust_remote_code=trust_remote_code
        )
    except OSError as err:
        raise FileNotFoundError(
            f"could not load model {path or embedded!r} offline: it is neither a local HF folder nor in the local "
            f"Hugging Face cache. Download it on a connected machine (huggingface-cli download {path}) or set "
            f"model.path=/local/folder. ({err})"
        ) from err
    model.config.use_cache = False
    return LanguageModel(model=model, tokenizer=tokenizer, source=source)
