"""The Simulator: a language model (plus an optional LoRA adapter) that predicts answer distributions per country.

Prompts are the paper's (the WVS instruction naming the country, the question, the lettered options, the answer
prefix) and scoring is exactly the evaluation path (:func:`simlab.model.scoring.simulator_logits` + masked softmax, with
the adapter's saved temperature and prior), so a simulation means what a test score means.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from simlab.data.batching import EncodedRow, PadCollator, PrefixGroupedBatchSampler, SharedPrefixCollator
from simlab.data.letters import resolve_letter_ids
from simlab.data.populations import Population, PopulationWording
from simlab.data.prompts import PAPER_ANSWER_PREFIX, PAPER_INSTRUCTION, PromptFormat, PromptTooLongError
from simlab.metrics.divergences import masked_softmax
from simlab.model import LanguageModel, base_model
from simlab.model.scoring import simulator_logits
from simlab.runs.rundir import RunDir
from simlab.simulate.countries import check_countries, wvs_countries
from simlab.simulate.observed import cell_row, whole_countries
from simlab.simulate.populations import (
    check_breakdown_inputs,
    population_frame,
    resolve_populations,
    simulator_wording,
    uses_overall_result,
)
from simlab.simulate.questions import LETTERS, Question, input_location, make_question
from simlab.simulate.settings import check_scoring_settings, simulator_settings
from simlab.simulate.trust import SimulationTrust
from simlab.simulator.bundle import ASK, DEFAULTS, LoadedSimulator, is_adapter, load_simulator, resolve_settings
from simlab.simulator.prior import SurveyPrior

log = logging.getLogger(__name__)

CAUTION = (
    "Simulated, not surveyed. Language models' simulated answer distributions are systematically less "
    "diverse across countries than real survey responses (Cao et al., NAACL 2025): read differences between "
    "countries as understated, and treat every number as a hypothesis to check against real data."
)
# source: "simulated" (the model's answer), or "observed" for a cell given in simulate.observed (its surveyed shares)
COLUMNS = ["question_id", "country", "letter", "option", "share", "source"]
PROMPT_ARGS = ("prompt_style", "chat_template", "prompt_order", "shared_prefix")  # the adapter's own
API_HINT = "pass allow_mismatch=True to score it anyway"


class Simulator:
    """A language model (plus an optional LoRA adapter) that predicts answer distributions per country.

    Args:
        model: a loaded :class:`simlab.model.LanguageModel` (the Simulator takes it over: an adapter is
            attached in place), or the keyword arguments of :func:`simlab.model.load_language_model`
            (e.g. ``{"embedded": "smollm2_135m_instruct"}`` or ``{"path": "/models/x"}``).
            A :class:`simlab.simulator.bundle.LoadedSimulator` (what :meth:`from_config` builds) brings its adapter,
            prompt settings, prior and temperature.
        adapter: a saved adapter folder (:mod:`simlab.simulator.bundle`); None simulates with the bare model.
        prompt_style / chat_template / prompt_order / shared_prefix: not given: the adapter's own (from its
            simulator.json), else ``plain``, the tokenizer's template, ``paper``, False. Given and contradicting
            the adapter: an error naming both, unless ``allow_mismatch=True``. ``shared_prefix`` batches each
            question's countries together and computes their shared prompt prefix once (the same shares as
            per-row batches, to float rounding).
        answer_prefix / instruction_template: the prompt's wording (the data's language).
        batch_size: prompts per forward pass (grouped by length, padded per batch).
        device: ``cuda``, ``cpu``...; None picks CUDA when available.
        max_length: the longest prompt allowed, in tokens; None: the model's own limit. Never truncated.
        known_countries: the names a simulation may use; None reads the WVS countries from ``data_root``.
        name: the model's name in every output (default: where it was loaded from).
        prior: the prior-anchored simulator's :class:`~simlab.simulator.prior.SurveyPrior` (an adapter trained on a
            prior needs it); new questions are looked up as survey ``simulate``, so only observed rows inform them.
        temperature: the calibration temperature (saved with the adapter by a calibrated fine-tune); None: 1.
            :meth:`from_config` / :meth:`from_run` apply the adapter's saved prior and temperature themselves.
        allow_mismatch: score an adapter with prompt settings it was not trained with.
        observed: surveyed cells (:func:`~simlab.simulate.observed.read_observed`): such a cell (same question id
            and letters) is not simulated but shown, marked ``source="observed"``; with populations, a whole
            country's is also its subgroups' breakdown input (``country_target``).
        population_wording: how a prompt names a subgroup (:class:`~simlab.data.populations.PopulationWording` or
            its config); None: the wording the adapter was trained with (simulator.json), else the default. A
            whole country keeps ``instruction_template``, as the population data's whole-country rows do.
    """

    def __init__(
        self,
        model: LanguageModel | Mapping[str, Any] | LoadedSimulator,
        adapter: str | Path | None = None,
        *,
        prompt_style: str = ASK,
        chat_template: str | None = ASK,
        answer_prefix: str = PAPER_ANSWER_PREFIX,
        instruction_template: str = PAPER_INSTRUCTION,
        prompt_order: str = ASK,
        shared_prefix: bool = ASK,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        max_length: int | None = None,
        data_root: str | Path | None = None,
        known_countries: Sequence[str] | None = None,
        name: str | None = None,
        prior=None,
        temperature: float | None = None,
        allow_mismatch: bool = False,
        observed: Sequence = (),
        population_wording: PopulationWording | Mapping[str, Any] | None = None,
    ):
        check_scoring_settings(batch_size, device)  # before any model is loaded
        if "{country}" not in instruction_template:
            raise ValueError(f"instruction_template must contain '{{country}}', got {instruction_template!r}")
        asked = {k: v for k, v in (("prompt_style", prompt_style), ("chat_template", chat_template),
                                   ("prompt_order", prompt_order), ("shared_prefix", shared_prefix)) if v is not ASK}
        if isinstance(model, LoadedSimulator):
            if adapter is not None:
                raise ValueError("Simulator(loaded, adapter=...): the loaded simulator has its adapter already")
            loaded = model
            known = {k: v for k, v in loaded.settings.items() if k in PROMPT_ARGS}
            settings, mismatches = resolve_settings(loaded.bundle, {**known, **asked}, asked, allow_mismatch,
                                                    hint=API_HINT)
            mismatches = loaded.mismatches + [m for m in mismatches if m not in loaded.mismatches]
        else:
            given = set(asked) | ({"base_model", "dtype"} if isinstance(model, Mapping) else set())
            loaded = load_simulator(model, adapter, settings=asked, explicit=given, allow_mismatch=allow_mismatch,
                                    hint=API_HINT)
            settings, mismatches = loaded.settings, loaded.mismatches
            if loaded.prior_build is not None and prior is None:
                log.warning("%s was trained on a prior %s that Simulator(...) does not build: use "
                            "Simulator.from_run/from_config, or pass prior=", adapter, loaded.prior_build)
        settings = {**DEFAULTS, **{k: v for k, v in settings.items() if k in PROMPT_ARGS}}
        self._take_model(loaded.lm, device)
        self.prompt = PromptFormat(style=settings["prompt_style"], answer_prefix=answer_prefix,
                                   chat_template=settings["chat_template"], order=settings["prompt_order"])
        self.shared_prefix = bool(settings["shared_prefix"])
        self.instruction_template = instruction_template
        self.batch_size = batch_size
        self.max_length = max_length if max_length is not None else model_max_length(self.model, self.tokenizer)
        self._data_root = data_root
        self._known = list(known_countries) if known_countries is not None else None
        self.prior, self.temperature = prior, temperature
        self.population_wording, self.wording_source = simulator_wording(population_wording, loaded)
        self.observed = {(row.question_id, row.population_key): row for row in observed}  # by cell
        self.provenance = {
            "model": name or loaded.lm.source,
            "model_source": loaded.lm.source,
            "adapter": str(Path(loaded.adapter).expanduser().resolve()) if loaded.adapter else None,
            "prompt_style": settings["prompt_style"],
            "prompt_order": settings["prompt_order"],
            "prior": prior.settings if prior is not None else None,
            "temperature": temperature,
            "caution": CAUTION,
        }
        if mismatches:  # settings asked against the adapter's own, allowed
            self.provenance["adapter_mismatch"] = mismatches
        self.trust = SimulationTrust.of(loaded, temperature, data_root)  # the adapter's intervals, its run's k

    def _take_model(self, lm: LanguageModel, device: str | torch.device | None) -> None:
        """The tokenizer (padding with eos when it has no pad token) and the model (with its adapter), in eval
        mode on ``device`` (None: CUDA when available)."""
        self.tokenizer = lm.tokenizer
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = lm.model
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()

    # ------------------------------------------------------------------ construction from a run
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], **overrides) -> Simulator:
        """From a resolved simlab config (what run.py saves as config_resolved.yaml): the model, its adapter with
        the adapter's own prompt, prior and temperature (:func:`simlab.simulator.bundle.load_simulator`). The
        config's prompt and prior give way to the adapter's unless ``model.allow_mismatch``; keyword arguments
        are explicit (one contradicting the adapter is an error unless ``allow_mismatch=True``)."""
        from simlab.simulate.observed import simulation_countries, simulation_prior_rows

        observed = list(overrides.pop("observed", None) or [])
        kwargs = simulator_settings(cfg)
        kwargs["observed"] = observed
        kwargs.update(overrides)
        check_scoring_settings(kwargs.get("batch_size", 64), kwargs.get("device"))  # before the model loads
        adapter = kwargs.pop("adapter", None)
        allow = bool(kwargs.pop("allow_mismatch", False) or (cfg["model"].get("allow_mismatch") or False))
        asked = {k: kwargs.pop(k) for k in PROMPT_ARGS if k in kwargs}
        explicit = set(asked) if allow else {k for k in overrides if k in PROMPT_ARGS}
        build = cfg.get("prior")
        build = {k: v for k, v in build.items() if not k.startswith("_")} if build else None
        given = "prior" in kwargs
        loaded = load_simulator(
            dict(cfg["model"]["loader"]), adapter, prior=ASK if given else build,
            prior_rows=None if given else (lambda: simulation_prior_rows(cfg, observed)),
            countries=lambda: simulation_countries(cfg, observed), settings=asked,
            explicit=explicit | ({"prior", "base_model", "dtype"} if allow else set()), allow_mismatch=allow,
        )
        if not given:
            whole = whole_countries(observed)
            kwargs["prior"] = loaded.prior if loaded.prior is not None else (SurveyPrior(whole) if whole else None)
        recorded = loaded.bundle is not None and loaded.bundle.population_wording is not None
        if not recorded and (cfg.get("data") or {}).get("population_wording") is not None:
            kwargs.setdefault("population_wording", cfg["data"]["population_wording"])
        if "temperature" not in kwargs:  # the temperature is part of a calibrated simulator
            calibrated = (cfg.get("simulate") or {}).get("calibrated", True)
            kwargs["temperature"] = loaded.temperature if calibrated else None
        return cls(loaded, **kwargs, allow_mismatch=True)

    @classmethod
    def from_run(cls, run_dir: str | Path, **overrides) -> Simulator:
        """From a run directory: its config_resolved.yaml, and its trained ``adapter/`` when it has one."""
        run_dir = Path(run_dir).expanduser()
        if not RunDir(run_dir).config_file.is_file():
            raise FileNotFoundError(f"{run_dir} has no config_resolved.yaml: not a simlab run directory")
        cfg = RunDir(run_dir).read_config()  # only simlab's own _target_s: a shared folder runs no code
        if "adapter" not in overrides:
            trained = RunDir(run_dir).adapter_dir
            overrides["adapter"] = str(trained) if is_adapter(trained) else cfg["model"].get("adapter")
        return cls.from_config(cfg, **overrides)

    # ------------------------------------------------------------------ prediction
    def known_countries(self) -> list[str]:
        if self._known is None:
            self._known = wvs_countries(self._data_root)
        return self._known

    def predict(self, question: str, options: Sequence[str], countries: Sequence[str] | None = None,
                id: str | None = None, *, populations: Sequence | None = None, groups: Sequence[str] | None = None):
        """One question's simulated distribution per country: a DataFrame (question_id, country, letter, option,
        share, source; ``lower``, ``upper`` after share when the adapter saved intervals, :mod:`.trust`). With
        populations (see :meth:`predict_questions`), one per population."""
        return self.predict_questions([make_question(question, options, id)], countries, populations=populations,
                                      groups=groups)

    def predict_questions(self, questions: Sequence[Question], countries: Sequence | None = None,
                          where: str = "countries", *, populations: Sequence | None = None,
                          groups: Sequence[str] | str | None = None,
                          group_values: Mapping[str, Sequence[str]] | None = None):
        """Every question x country, batched; rows in question, country, option order. attrs: provenance, and
        ``intervals`` and ``effective_respondents`` (the k of each country's closest evaluated setting, :mod:`.trust`).

        Populations (:func:`~simlab.simulate.populations.resolve_populations`): ``populations`` (``{"country":
        "Kenya", "sex": "female"}`` or Population; also accepted among ``countries``) and ``groups`` (split each of
        ``countries`` into its subgroups: ``["sex", "age"]``, values from ``group_values`` else GROUP_VALUES) give
        rows per country, its populations side by side (:func:`~simlab.simulate.populations.population_frame`).
        """
        if not questions:
            raise ValueError("no questions to simulate")
        known = self.known_countries()
        prefix = where.rpartition(".")[0] + "." if "." in where else ""
        asked = resolve_populations(countries, populations, groups, known, self.wording, group_values, prefix)
        by_country = asked is None
        if by_country:  # countries only: the country simulation, its observed cells shown as observed
            countries = check_countries(list(countries) if countries is not None else known, known, where)
            asked = [Population(c) for c in countries]
        elif self.wording_source.startswith("default (") and any(p.attributes for p in asked):
            log.warning("%s: %s; its subgroup prompts are new to it", self.provenance["adapter"], self.wording_source)
        observed = self.observed_rows(questions)
        if uses_overall_result(self.prior):
            check_breakdown_inputs(questions, asked, observed, prefix)
        surveyed = {(row.question_id, row.population_key) for row in observed}
        cells = [(q, p) for q in questions for p in asked if (q.id, p.key) not in surveyed]  # the ones to simulate
        shares = dict(zip([(q.id, p.key) for q, p in cells], self._score(self._encode(cells)) if cells else []))
        if by_country:  # a whole country's key is its name; an observed cell shows its surveyed shares
            given = {(row.question_id, row.population_key): list(row.target) for row in observed}
            cells = [(q, p.country) for q in questions for p in asked]
            frame = simulation_frame(cells, [given.get((q.id, c)) or shares[(q.id, c)] for q, c in cells],
                                     ["observed" if (q.id, c) in given else "simulated" for q, c in cells])
        else:
            frame = population_frame(questions, asked, shares, observed, uses_overall_result(self.prior))
            frame.attrs["population_wording"] = {"from": self.wording_source, **dataclasses.asdict(self.wording)}
        frame.attrs.update(self.provenance)
        frame.attrs["questions"] = {q.id: {"text": q.text, "options": list(q.options)} for q in questions}
        frame.attrs["countries"] = list(dict.fromkeys(p.country for p in asked))
        self.trust.apply(frame)
        return frame

    @property
    def wording(self) -> PopulationWording:
        """How prompts name subgroups: the adapter's or the given wording, else the default."""
        return self.population_wording or PopulationWording()

    def observed_rows(self, questions: Sequence[Question]) -> list:
        """The observed cells of these questions (same id and letters): each is shown as surveyed, never replaced
        by a simulation of it; a cell of another question (or of this id with other options) is left out."""
        letters = {q.id: tuple(q.letters) for q in questions}
        return [row for row in self.observed.values() if letters.get(row.question_id) == tuple(row.letters)]

    def prompt_text(self, question: Question, country: str | Population) -> str:
        """The exact model input for one (question, country or population), as in training and evaluation."""
        population = country if isinstance(country, Population) else Population(country)
        if population.attributes:  # a subgroup: as data.population_wording renders training rows
            instruction = self.wording.instruction(population)
        else:  # a whole country: the data's instruction (the paper's, or its language's), as in training
            instruction = self.instruction_template.format(country=population.country)
        return self.prompt.render_parts(instruction, question.prompt_input, question.lettered_options, self.tokenizer)

    # ------------------------------------------------------------------ encoding
    def _encode(self, cells: list[tuple[Question, Population]]) -> list[EncodedRow]:
        letters = LETTERS[: max(len(q.options) for q, _ in cells)]
        context = self.prompt_text(*cells[0])
        letter_ids = resolve_letter_ids(self.tokenizer, context, letters,
                                        add_special_tokens=self.prompt.add_special_tokens)
        groups: dict[str, int] = {}
        observed = whole_countries(self.observed_rows([question for question, _ in cells]))
        overall = {(r.question_id, r.country): r.target for r in observed}
        return [self._encode_cell(question, population, letter_ids, groups,
                                  overall.get((question.id, population.country)) if population.attributes else None)
                for question, population in cells]

    def _encode_cell(self, question: Question, population: Population, letter_ids: Mapping[str, int],
                     groups: dict[str, int], country_target: Sequence[float] | None = None) -> EncodedRow:
        """One (question, population) prompt as token ids, with its letters' ids, prefix group and log prior (a
        subgroup's row carries its country's observed shares, ``country_target``, for a breakdown prior)."""
        ids = self._prompt_ids(question, population)
        key = self.prompt.prefix_key(question.prompt_input, question.lettered_options)
        log_prior = None
        if self.prior is not None:
            log_prior = np.log(self.prior.prior(cell_row(question, population, country_target=country_target))).tolist()
        return EncodedRow(input_ids=list(ids), letter_ids=[letter_ids[l] for l in question.letters],
                          target=[0.0] * len(question.letters),
                          prefix_group=groups.setdefault(key, len(groups)), log_prior=log_prior)

    def _prompt_ids(self, question: Question, population: Population) -> list[int]:
        """The prompt's token ids; longer than ``max_length`` is an error (prompts are never truncated)."""
        ids = self.tokenizer(self.prompt_text(question, population),
                             add_special_tokens=self.prompt.add_special_tokens)["input_ids"]
        if len(ids) > self.max_length:
            raise PromptTooLongError(
                f"{input_location(question.source, question.index, question.id, 'text')}: "
                f"the prompt for {population.key} has {len(ids)} tokens, more than the limit of {self.max_length} "
                f"(the model's context, or max_length); shorten the question or its options "
                f"(prompts are never truncated)",
            )
        return ids

    # ------------------------------------------------------------------ scoring
    def _score(self, encoded: list[EncodedRow]) -> list[list[float]]:
        batches, collate = scoring_batches(encoded, self.batch_size, self.shared_prefix,
                                           self.tokenizer.pad_token_id)
        shares: list[list[float] | None] = [None] * len(encoded)
        with torch.inference_mode():
            for batch_indices in tqdm(batches, desc="simulate: scoring", unit="batch", disable=len(batches) < 2):
                batch = collate([(i, encoded[i]) for i in batch_indices])
                batch = {k: v.to(self.device) for k, v in batch.items()}
                logits = simulator_logits(self.model, batch) / (self.temperature or 1.0)
                probs = masked_softmax(logits, batch["option_mask"])
                for row, row_probs, row_mask in zip(batch["row_index"].tolist(), probs, batch["option_mask"]):
                    shares[row] = row_probs[row_mask].double().cpu().tolist()
        return shares  # type: ignore[return-value]


def simulation_frame(cells: list[tuple[Question, str]], shares: list[list[float]],
                     sources: Sequence[str] | None = None):
    """The tidy DataFrame of a simulation: one row per cell and option (question_id, country, letter, option,
    share, source), in cell then option order; ``sources``: per cell, ``simulated`` (the default) or ``observed``."""
    import pandas as pd

    records = []
    for position, ((question, country), probs) in enumerate(zip(cells, shares)):
        source = sources[position] if sources is not None else "simulated"
        for letter, label, share in zip(question.letters, question.options, probs):
            records.append((question.id, country, letter, label, share, source))
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def scoring_batches(encoded: list[EncodedRow], batch_size: int, shared_prefix: bool,
                    pad_token_id: int) -> tuple[list[list[int]], Any]:
    """The batches (lists of row indices) to score and their collator."""
    lengths = [len(e.input_ids) for e in encoded]
    if shared_prefix:  # one question's countries together, its prompt prefix computed once per batch
        sampler = PrefixGroupedBatchSampler(lengths, [e.prefix_group for e in encoded], batch_size,
                                            shuffle=False, num_replicas=1, rank=0)
        return list(sampler), SharedPrefixCollator(pad_token_id)
    # longest first, as evaluation batches (little padding, memory problems show at once); every row, one process
    order = sorted(range(len(encoded)), key=lambda i: (-lengths[i], i))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return batches, PadCollator(pad_token_id)


def model_max_length(model, tokenizer) -> int:
    """The longest input the model takes: its position limit, or the tokenizer's if that is smaller."""
    limits = [getattr(base_model(model).config, "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    limits = [int(v) for v in limits if isinstance(v, int) and 0 < v < 10**8]
    if not limits:
        raise ValueError("cannot tell the model's context length; pass max_length")
    return min(limits)
