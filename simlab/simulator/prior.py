"""What the survey already knows about a question: the prior of the prior-anchored simulator.

The prior-anchored simulator predicts ``q ∝ prior · exp(logits)``: the model's option logits move a prior instead
of replacing it. A row's prior is its question's answer distribution across the countries with survey data
(the training countries), never including the row's own country: for a training row it is the mean over the
*other* training countries, so training looks like predicting a country the survey did not reach. A question
nobody answered gets the uniform prior (the logits alone decide). A question is its survey, its id and its
option letters, so a Pew question 83 never receives WVS question 83's answers. A population row (a subgroup of a
country, :mod:`simlab.data.populations`) is answered by the same subgroup of the other countries: answers are
grouped by question *and* attributes, and a whole country (no attributes) is exactly the country-level prior.

:class:`SurveyPrior` averages the other countries equally. With ``temperature`` and country ``embeddings`` it
weights them by similarity, ``softmax(cos(country, other) / temperature)``: how close the model finds two
countries decides how much one's answers say about the other's. :func:`fit_temperature` picks the temperature on
the training rows alone (leave one country out).
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from simlab.data.rows import SurveyRow
from simlab.data.transforms import permuted  # noqa: F401  (re-exported: a prior in a shuffled row's order)
from simlab.simulator.keys import PriorKey, QuestionKey, prior_key, question_key  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


class SurveyPrior:
    """Per question and subgroup, the observed countries' distributions; :meth:`prior` is their (weighted) mean
    without the row's own country, uniform (or the answer-position prior) where no other country answered.

    Args:
        rows: rows with observed distributions (the training rows, or a simulation's observed countries).
        embeddings: country -> vector (e.g. :func:`country_embeddings`); None weighs every country equally.
        temperature: softmax temperature over cosine similarities (needs ``embeddings``).
        fallback: ``uniform`` or ``position`` (the answer-position prior) for questions nobody else answered.
        smoothing: the weight of the uniform distribution mixed in (an option nobody chose stays possible).
    """

    def __init__(self, rows: Sequence[SurveyRow], embeddings: Mapping[str, np.ndarray] | None = None,
                 temperature: float | None = None, fallback: str = "uniform", smoothing: float = 0.01):
        if fallback not in ("uniform", "position"):
            raise ValueError(f"fallback must be 'uniform' or 'position', got {fallback!r}")
        if (embeddings is None) != (temperature is None):
            raise ValueError("a similarity-weighted prior needs both embeddings and a temperature")
        if temperature is not None and not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.fallback, self.smoothing = fallback, smoothing
        self._answers: dict[PriorKey, dict[str, np.ndarray]] = defaultdict(dict)
        positions: dict[tuple, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
        for row in rows:
            positions[self._position_key(row)][row.country].append(np.asarray(row.target, dtype=np.float64))
            answers = self._answers[prior_key(row)]
            if row.country in answers:
                raise ValueError(
                    f"{row.source}: row {row.index}: {row.population_key} answers question {row.question_id} twice")
            answers[row.country] = np.asarray(row.target, dtype=np.float64)
        # per (survey, number of options, subgroup), per country: the mean share of each answer position
        self._positions = {k: {c: np.mean(ts, axis=0) for c, ts in by_country.items()}
                           for k, by_country in positions.items()}
        self.temperature = temperature
        self.settings: dict = {"similarity": False}  # how the prior was built, recorded with the run
        self.settings["fallback"] = fallback
        self._unit = None
        self._weights: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
        if embeddings is not None:
            self._unit = {c: np.asarray(v, dtype=np.float64) / np.linalg.norm(v) for c, v in embeddings.items()}

    @property
    def questions(self) -> int:
        """How many (question, subgroup) pairs have answers (for country rows: questions)."""
        return len(self._answers)

    def weights(self, country: str, others: Sequence[str]) -> np.ndarray:
        """How much each of ``others`` counts for ``country`` (sums to 1; ``country`` itself may be among them)."""
        if self._unit is None:
            return np.full(len(others), 1.0 / len(others))
        key = (country, tuple(others))  # most questions share one set of countries: compute each set once
        if key not in self._weights:
            self._weights[key] = self._similarity_weights(country, others)
        return self._weights[key]

    def _similarity_weights(self, country: str, others: Sequence[str]) -> np.ndarray:
        missing = [c for c in [country, *others] if c not in self._unit]
        if missing:
            raise KeyError(f"no embedding for {missing}: embed every country the prior is asked about")
        sims = np.array([self._unit[country] @ self._unit[o] for o in others]) / self.temperature
        sims = np.exp(sims - sims.max())
        return sims / sims.sum()

    def prior(self, row: SurveyRow, exclude: Sequence[str] = ()) -> np.ndarray:
        """The row's prior in its option order (float64, sums to 1, mixed with ``smoothing`` of uniform so that no
        option is impossible), from every country but the row's own and ``exclude``."""
        answers = self._answers.get(prior_key(row), {})
        others = [c for c in answers if c != row.country and c not in exclude]
        shares = self._mean(row.country, answers, others) if others else self._fallback(row)
        return (1 - self.smoothing) * shares + self.smoothing / len(shares)

    def _mean(self, country: str, answers: Mapping[str, np.ndarray], countries: Sequence[str]) -> np.ndarray:
        mean = self.weights(country, countries) @ np.stack([answers[c] for c in countries])
        return mean / mean.sum()

    @staticmethod
    def _position_key(row: SurveyRow) -> tuple:
        """A response style is a survey's, for a number of options, of one subgroup (a whole country: ``()``)."""
        return (row.survey, len(row.letters)) if not row.attributes else (row.survey, len(row.letters), row.attributes)

    def _fallback(self, row: SurveyRow) -> np.ndarray:
        k = len(row.letters)
        by_country = self._positions.get(self._position_key(row), {}) if self.fallback == "position" else {}
        if not by_country:
            return np.full(k, 1.0 / k)
        return self._mean(row.country, by_country, list(by_country))

    def covers(self, row: SurveyRow) -> bool:
        """Whether any other country answered the row's question, for the row's subgroup (else its prior is the
        fallback)."""
        return any(c != row.country for c in self._answers.get(prior_key(row), {}))


def fit_temperature(rows: Sequence[SurveyRow], embeddings: Mapping[str, np.ndarray],
                    grid: Sequence[float] = (0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0),
                    ) -> tuple[float, dict[float, float]]:
    """The temperature whose leave-one-country-out prior is closest to the rows' own distributions (mean 1−JSD),
    with the score of every temperature tried; the equal-weight prior's score is under key ``inf``."""
    scores = {float("inf"): _loo_score(SurveyPrior(rows), rows)}
    for temperature in grid:
        scores[float(temperature)] = _loo_score(SurveyPrior(rows, embeddings, temperature), rows)
    best = max(scores, key=scores.get)
    log.info("similarity prior: leave-one-country-out 1-JSD on %d training rows by temperature %s; best %s",
             len(rows), {k: round(v, 4) for k, v in scores.items()}, best)
    return best, scores


def _loo_score(prior: SurveyPrior, rows: Sequence[SurveyRow]) -> float:
    """Mean 1-JSD between each row's distribution and its leave-one-country-out prior, all rows in one call."""
    from simlab.metrics.registry import one_minus_jsd_rows
    from simlab.metrics.scoring import pad_distributions

    target, mask = pad_distributions([r.target for r in rows])
    predicted, _ = pad_distributions([prior.prior(r) for r in rows])
    return float(np.mean(one_minus_jsd_rows(predicted, target, mask).numpy()))


def country_embeddings(model, tokenizer, countries: Sequence[str], template: str = "People in {country}",
                       layer: int | str = "middle") -> dict[str, np.ndarray]:
    """The model's picture of each country: the hidden state of ``layer`` (an index, ``"middle"`` or ``"last"``)
    at the last token of ``template``, whose last words are the country's name. On the training rows the middle
    layer of SmolLM2-135M with this template gave the closest leave-one-country-out prior (see QUALITY.md)."""
    import torch
    from tqdm.auto import tqdm

    from simlab.model.adapters import base_model

    lm = base_model(model)
    device = next(lm.parameters()).device
    vectors = {}
    # the base model's picture, the same before and after fine-tuning (a LoRA adapter is switched off here)
    bare = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    with torch.inference_mode(), bare:
        for country in tqdm(countries, desc="prior: embedding countries", unit="country", disable=len(countries) < 2):
            ids = tokenizer(template.format(country=country), return_tensors="pt")["input_ids"].to(device)
            states = lm(input_ids=ids, output_hidden_states=True).hidden_states
            index = {"middle": len(states) // 2, "last": len(states) - 1}.get(layer, layer)
            vectors[country] = states[int(index)][0, -1].float().cpu().numpy()
    return vectors


def build_prior(rows: Sequence[SurveyRow], model=None, tokenizer=None, similarity: bool = False,
                fallback: str = "uniform", smoothing: float = 0.01, template: str = "People in {country}",
                layer: int | str = "middle", grid: Sequence[float] = (0.0025, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1),
                countries: Sequence[str] = (), use: str = "new_country", eps: float | None = None):
    """The prior from the rows with survey data (the training subset). With ``similarity`` the training countries
    are weighted by the model's country similarity, the temperature fitted on ``rows`` alone (leave one country
    out; the equal-weight prior is kept when no temperature beats it). ``countries``: the other countries that
    will ask for a prior (test countries), embedded too.

    ``use``: ``new_country`` (the above: nothing known about the row's country) or ``breakdown`` (the row's
    country's overall shares are known: :class:`simlab.simulator.breakdown.BreakdownPrior`, the country's shares
    moved by the training countries' average subgroup shift, with ``eps`` and ``smoothing``)."""
    if use == "breakdown":
        from simlab.simulator.breakdown import DEFAULT_EPS, BreakdownPrior

        if similarity:
            raise ValueError("prior.use=breakdown moves the country's own shares; country similarity does not apply "
                             "(set prior.similarity=false)")
        return BreakdownPrior(rows, eps=DEFAULT_EPS if eps is None else eps, smoothing=smoothing)
    if use != "new_country":
        raise ValueError(f"prior.use must be 'new_country' or 'breakdown', got {use!r}")
    if eps is not None:
        raise ValueError("prior.eps is the breakdown prior's (prior.use=breakdown)")
    if not similarity or not rows:
        return SurveyPrior(rows, fallback=fallback, smoothing=smoothing)
    if model is None or tokenizer is None:
        raise ValueError("a similarity-weighted prior needs the model and tokenizer to embed the countries")
    names = sorted({r.country for r in rows} | set(countries))
    embeddings = country_embeddings(model, tokenizer, names, template=template, layer=layer)
    temperature, _ = fit_temperature(rows, embeddings, grid=grid)
    if temperature == float("inf"):
        return SurveyPrior(rows, fallback=fallback, smoothing=smoothing)
    prior = SurveyPrior(rows, embeddings, temperature, fallback=fallback, smoothing=smoothing)
    prior.settings.update(similarity=True, template=template, layer=layer, temperature=temperature)
    return prior
