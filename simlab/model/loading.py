"""Load a causal LM and its tokenizer from a local folder, a Hugging Face hub id, or an embedded model.

A hub id is read from the local Hugging Face cache, and downloaded into it when missing unless HF_HUB_OFFLINE=1
(which the Makefile and CI set: nothing is downloaded there)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from simlab.model.embedded import embedded_model_dir

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LanguageModel:
    """A causal LM, its tokenizer, and where it came from (written into every output)."""

    model: PreTrainedModel
    tokenizer: object
    source: str


class ModelNotAvailable(FileNotFoundError):
    """The weights a config asks for are not on this machine (no local folder, not in the HF cache).

    A subclass of FileNotFoundError so plain callers see a missing file; a sweep catches it by name to mark a
    job as skipped instead of failed.
    """


def offline() -> bool:
    """Whether Hugging Face downloads are off (HF_HUB_OFFLINE, as huggingface_hub reads it at import)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _looks_like_path(name: str) -> bool:
    """A filesystem path (absolute, ~, ./, or more than one '/'), never a hub id like 'org/name'."""
    return name.startswith(("/", "~", ".")) or name.count("/") > 1 or "\\" in name


MODEL_JSON_FILES = ("config.json", "generation_config.json", "tokenizer_config.json")  # small, read before weights


def check_json_files(folder: Path) -> None:
    """The model folder's small JSON files (those there of :data:`MODEL_JSON_FILES`) are JSON objects: a damaged
    one is an error naming it, not transformers' "not available" or a raw JSONDecodeError."""
    import json

    for name in MODEL_JSON_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            empty = " (the file is empty)" if path.stat().st_size == 0 else ""
            raise ValueError(f"model.path: {path} is not valid JSON{empty} ({err}); the model folder is damaged: "
                             f"copy it again") from None
        if not isinstance(record, dict):
            raise ValueError(f"model.path: {path} is not a JSON object; the model folder is damaged: copy it again")


def load_language_model(
    path: str | None = None,
    hub_id: str | None = None,
    embedded: str | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> LanguageModel:
    """Load from ``path`` (a local HF folder, or a hub id), else ``hub_id``, else the ``embedded`` model. A hub id
    comes from the local HF cache, or is downloaded unless HF_HUB_OFFLINE=1; a model that cannot be had raises
    :class:`ModelNotAvailable` naming what it needs."""
    if dtype not in DTYPES:
        raise ValueError(f"model dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if path:
        source = str(path)
        local = Path(path).expanduser()
        if local.exists() and not (local / "config.json").is_file():
            raise ModelNotAvailable(f"model.path {local} exists but has no config.json: not an HF model folder")
        if local.is_dir():
            check_json_files(local)
        if not local.exists() and _looks_like_path(str(path)):
            raise ModelNotAvailable(f"model.path {local} does not exist (a local Hugging Face model folder is needed)")
        location = str(local) if local.exists() else str(path)
    elif hub_id:
        source, location = str(hub_id), str(hub_id)
    elif embedded:
        source = f"embedded:{embedded}"
        location = str(embedded_model_dir(embedded))
    else:
        raise ValueError("set model.path (a local HF folder or cached hub id), model.hub_id or model.embedded")
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code)
    except OSError as err:
        how = ("HF_HUB_OFFLINE=1 forbids downloading it: unset it on a connected machine, or download it there "
               f"(hf download {location}) and copy the cache" if offline() else
               "the download failed (a gated model needs `hf auth login` and accepted terms)")
        raise ModelNotAvailable(
            f"model {location!r} is not available: it is neither a local HF folder nor in the local Hugging Face "
            f"cache, and {how}; or set model.path=/local/folder. ({err})"
        ) from err
    model.config.use_cache = False
    return LanguageModel(model=model, tokenizer=tokenizer, source=source)
