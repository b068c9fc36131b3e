"""Language models: loading (local, cached hub id, embedded GGUF) and LoRA adapters."""

from simlab.model.adapters import PAPER_LORA, attach_lora, base_model, load_adapter, paper_lora_config
from simlab.model.embedded import embedded_gguf_file, embedded_model_dir
from simlab.model.loading import LanguageModel, ModelNotAvailable, load_language_model

__all__ = [
    "PAPER_LORA",
    "LanguageModel",
    "ModelNotAvailable",
    "attach_lora",
    "base_model",
    "embedded_gguf_file",
    "embedded_model_dir",
    "load_adapter",
    "load_language_model",
    "paper_lora_config",
]
