"""LoRA adapters through peft: attach a fresh one for fine-tuning, or load a trained one."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model

# The paper's LoRA, as conf/model/lora/paper.yaml writes it for run.py (tests/test_models.py checks they agree);
# simlab.devtools.bench takes it from here.
PAPER_LORA = {"task_type": "CAUSAL_LM", "r": 8, "lora_alpha": 32, "lora_dropout": 0.05,
              "target_modules": ["q_proj", "v_proj"]}


def paper_lora_config() -> LoraConfig:
    """A fresh peft LoraConfig with the paper's values (:data:`PAPER_LORA`)."""
    return LoraConfig(**{k: list(v) if isinstance(v, list) else v for k, v in PAPER_LORA.items()})


def attach_lora(model, config: LoraConfig) -> PeftModel:
    """Freeze the base model and add trainable LoRA weights (the paper: r 8, alpha 32, dropout 0.05)."""
    return get_peft_model(model, config)


ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")  # what peft's save_pretrained writes


def check_adapter_files(adapter_dir: str | Path) -> Path:
    """A saved peft adapter's files, checked before any model is loaded: adapter_config.json a JSON object with
    ``peft_type``, and a weights file (a safetensors file's header read); a problem names the file. Returns the
    weights file."""
    adapter_dir = Path(adapter_dir).expanduser()
    config = adapter_dir / ADAPTER_CONFIG
    if not config.is_file():
        raise FileNotFoundError(f"model.adapter={adapter_dir} has no {ADAPTER_CONFIG} (a saved peft adapter)")
    try:
        record = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config}: not valid JSON ({err}); the adapter folder (model.adapter) is damaged") from None
    if not isinstance(record, dict) or "peft_type" not in record:
        raise ValueError(f"{config}: not a peft adapter config (a JSON object with peft_type)")
    weights = next((adapter_dir / name for name in WEIGHT_FILES if (adapter_dir / name).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"model.adapter={adapter_dir} has no adapter weights ({' or '.join(WEIGHT_FILES)})")
    if weights.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(weights), framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{weights}: not a readable safetensors file ({err}); the adapter folder "
                             f"(model.adapter) is damaged") from None
    return weights


def load_adapter(model, adapter_dir: str | Path, trainable: bool = False) -> PeftModel:
    """The trained adapter on ``model``; a file peft cannot read is an error naming it (not the library's own)."""
    adapter_dir = Path(adapter_dir).expanduser()
    weights = check_adapter_files(adapter_dir)
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
    except pickle.UnpicklingError:  # torch's advice (load with weights_only=False) would run code from the file
        raise ValueError(f"{weights}: not a readable weights file, or one holding more than tensors (simlab loads "
                         f"weights only); the adapter folder (model.adapter) is damaged") from None
    except (OSError, RuntimeError, EOFError, ValueError) as err:  # a damaged .bin, weights for another model
        if "out of memory" in str(err).lower():  # a machine's limit, not the adapter's fault
            raise
        raise ValueError(f"model.adapter={adapter_dir}: cannot load {weights.name} onto this model "
                         f"({type(err).__name__}: {' '.join(str(err).split())[:300]})") from err


def base_model(model):
    """The transformers model under a peft wrapper (LoRA layers live inside it), or the model itself."""
    return model.get_base_model() if isinstance(model, PeftModel) else model
