"""LoRA adapters through peft: attach a fresh one for fine-tuning, or load a trained one."""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model


def attach_lora(model, config: LoraConfig) -> PeftModel:
    """Freeze the base model and add trainable LoRA weights (the paper: r 8, alpha 32, dropout 0.05)."""
    return get_peft_model(model, config)


def load_adapter(model, adapter_dir: str | Path, trainable: bool = False) -> PeftModel:
    adapter_dir = Path(adapter_dir).expanduser()
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"model.adapter={adapter_dir} has no adapter_config.json (a saved peft adapter)")
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)


def base_model(model):
    """The transformers model under a peft wrapper (LoRA layers live inside it), or the model itself."""
    return model.get_base_model() if isinstance(model, PeftModel) else model
