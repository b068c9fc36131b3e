"""Language models: loading (local, cached hub id, embedded GGUF) and LoRA adapters."""

from .adapters import attach_lora, base_model, load_adapter
from .embedded import embedded_gguf_file, embedded_model_dir
from .loading import LanguageModel, ModelNotAvailable, load_language_model

__all__ = [
    "LanguageModel",
    "ModelNotAvailable",
    "attach_lora",
    "base_model",
    "embedded_gguf_file",
    "embedded_model_dir",
    "load_adapter",
    "load_language_model",
]
