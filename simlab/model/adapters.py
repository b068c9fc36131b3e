"""LoRA adapters through peft: attach a fresh one for fine-tuning, or load a trained one."""

from __future__ import annotations

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


def load_adapter(model, adapter_dir: str | Path, trainable: bool = False) -> PeftModel:
    adapter_dir = Path(adapter_dir).expanduser()
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"model.adapter={adapter_dir} has no adapter_config.json (a saved peft adapter)")
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)


def base_model(model):
    """The transformers model under a peft wrapper (LoRA layers live inside it), or the model itself."""
    return model.get_base_model() if isinstance(model, PeftModel) else model
