"""Simulate answer distributions for new questions and countries with a (fine-tuned) language model.

The point of the framework: ask a question that was never surveyed, for the countries you care about, and
read the model's predicted share of each answer option. Prompts are the paper's (the WVS instruction naming
the country, the question, the lettered options, the answer prefix) and scoring is exactly the evaluation
path (:func:`simlab.scoring.simulator_logits` + masked softmax, with the adapter's saved temperature and prior),
so a simulation means what a test score means.

Notebook use (no Hydra needed)::

    from simlab.simulate import Simulator
    sim = Simulator.from_run("outputs/finetune/<run>")          # the run's model + its adapter
    df = sim.predict("Should cities ban cars from their centre?", ["Yes", "No"], ["Japan", "Kenya"])
    df.attrs["caution"]

``python run.py task=simulate`` goes through :func:`simulate_task`, which uses the same :class:`Simulator`.
"""

from __future__ import annotations

import csv
import difflib
import importlib
import json
import logging
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .calibration import load_calibration
from .data.batching import EncodedRow, PadCollator, PrefixGroupedBatchSampler, SharedPrefixCollator
from .data.letters import resolve_letter_ids
from .data.prompts import PAPER_ANSWER_PREFIX, PAPER_INSTRUCTION, PromptFormat, PromptTooLongError
from .data.rows import SurveyRow
from .losses import masked_softmax
from .model import LanguageModel, base_model, load_adapter, load_language_model
from .paths import data_root
from .scoring import simulator_logits

log = logging.getLogger(__name__)

CAUTION = (
    "Simulated, not surveyed. Language models' simulated answer distributions are systematically less "
    "diverse across countries than real survey responses (Cao et al., NAACL 2025): read differences between "
    "countries as understated, and treat every number as a hypothesis to check against real data."
)
OPTIONS_INTRO = " \nHere are the options: \n"  # how every WVS question text ends in the paper's data
LETTERS = string.ascii_uppercase
QUESTION_FIELDS = ("id", "text", "options")
WVS_GROUPS = ("C1", "C2", "C3")
COLUMNS = ["question_id", "country", "letter", "option", "share"]


class SimulationInputError(ValueError):
    """A question or country that cannot be simulated, located by source, entry (index and id) and field."""

    def __init__(self, source: str, index: int | None, question_id: str | None, field_name: str | None, message: str):
        self.source, self.index, self.question_id, self.field_name = source, index, question_id, field_name
        super().__init__(f"{input_location(source, index, question_id, field_name)}: {message}")


def input_location(source: str, index: int | None, question_id: str | None, field_name: str | None) -> str:
    """``source: entry 1 (id 'x'): field 'text'``, each part only where known."""
    where = source
    if index is not None:
        where += f": entry {index}"
        if question_id is not None:
            where += f" (id {question_id!r})"
    if field_name is not None:
        where += f": field '{field_name}'"
    return where


# ---------------------------------------------------------------------------------------------- questions
@dataclass(frozen=True)
class Question:
    """A question to simulate: its text and plain option labels (letters A, B, C... are assigned in order)."""

    id: str
    text: str
    options: tuple[str, ...]
    source: str = "<api>"
    index: int = 0

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(LETTERS[: len(self.options)])

    @property
    def lettered_options(self) -> tuple[str, ...]:
        """The options as the paper writes them: '(A)label'."""
        return tuple(f"({letter}){label}" for letter, label in zip(self.letters, self.options))

    @property
    def prompt_input(self) -> str:
        """The question in the data's style: the text, then ' \\nHere are the options: \\n'."""
        text = self.text.strip()
        if text.lower().rstrip(":").endswith("here are the options"):
            text = text.rstrip(":").rstrip()[: -len("here are the options")].rstrip()
        return text + OPTIONS_INTRO


def make_question(text: Any, options: Any, id: Any = None, *, source: str = "<api>", index: int = 0) -> Question:
    """Validate one question (raises SimulationInputError naming the entry and field)."""
    qid = None if id is None else id
    if qid is not None:
        if isinstance(qid, bool) or not isinstance(qid, (str, int)) or not str(qid).strip():
            raise SimulationInputError(
                source, index, None, "id", f"must be a non-empty string or an integer, got {qid!r}")
        qid = str(qid).strip()

    def fail(field_name: str, message: str) -> SimulationInputError:
        return SimulationInputError(source, index, qid, field_name, message)

    if text is None:
        raise fail("text", "missing: every question needs its text")
    if not isinstance(text, str):
        raise fail("text", f"must be a string, got {type(text).__name__}")
    if not text.strip():
        raise fail("text", "is empty")
    if options is None:
        raise fail("options", "missing: give the answer options as a list of plain labels")
    if isinstance(options, str) or not isinstance(options, Sequence):
        raise fail("options", f"must be a list of plain labels, got {type(options).__name__}")
    if len(options) == 0:
        raise fail("options", "has no options; a question needs at least 2")
    if len(options) == 1:
        raise fail("options", f"has only one option ({options[0]!r}); a question needs at least 2")
    if len(options) > len(LETTERS):
        raise fail("options", f"has {len(options)} options; at most {len(LETTERS)} (letters A-Z) can be scored")
    labels: list[str] = []
    for position, label in enumerate(options):
        if not isinstance(label, str):
            raise fail("options", f"option {position} must be a string, got {label!r}")
        label = label.strip()
        if not label:
            raise fail("options", f"option {position} is empty")
        if label[:1] == "(" and label[2:3] == ")" and label[1:2] in LETTERS:
            raise fail(
                "options", f"option {position} {label!r} has a '(L)' prefix: give plain labels, letters are assigned")
        if label in labels:
            raise fail("options", f"option {label!r} is repeated (positions {labels.index(label)} and {position})")
        labels.append(label)
    return Question(id=qid if qid is not None else f"q{index + 1}", text=text.strip(), options=tuple(labels),
                    source=source, index=index)


def read_questions(path: str | Path) -> list[Question]:
    """Questions from a YAML, JSON or CSV file; every problem names the file, entry and field.

    YAML / JSON: a list of entries (or ``{questions: [...]}``), each ``{id (optional), text, options: [...]}``.
    YAML is read with every scalar as a string, so unquoted Yes / No / 1 stay the labels written.
    CSV: columns ``id`` (optional), ``text``, and ``option_1``, ``option_2``, ... (empty trailing cells ignored).
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"simulate.input: question file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        entries = _csv_entries(path)
    elif suffix in (".yaml", ".yml", ".json"):
        entries = _structured_entries(path, suffix)
    else:
        raise SimulationInputError(source, None, None, None, "unsupported file type: use .yaml, .yml, .json or .csv")
    if not entries:
        raise SimulationInputError(source, None, None, None, "has no questions")
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise SimulationInputError(
                source, index, None, None, f"must be a mapping with text and options, got {type(entry).__name__}")
        unknown = sorted(set(entry) - set(QUESTION_FIELDS))
        if unknown:
            raise SimulationInputError(
                source, index, None, unknown[0], f"unknown field; known fields are {list(QUESTION_FIELDS)}")
        question = make_question(entry.get("text"), entry.get("options"), entry.get("id"), source=source, index=index)
        if question.id in seen:
            raise SimulationInputError(source, index, question.id, "id", f"repeats the id of entry {seen[question.id]}")
        seen[question.id] = index
        questions.append(question)
    return questions


def _structured_entries(path: Path, suffix: str) -> list:
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SimulationInputError(
                str(path), None, None, None, f"malformed JSON at line {err.lineno} column {err.colno}: {err.msg}"
            ) from err
    else:
        import yaml

        try:
            data = yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506 - BaseLoader builds only str/list/dict
        except yaml.YAMLError as err:
            raise SimulationInputError(str(path), None, None, None, f"malformed YAML: {err}") from err
    if isinstance(data, Mapping) and set(data) == {"questions"}:
        data = data["questions"]
    if not isinstance(data, list):
        raise SimulationInputError(
            str(path), None, None, None, "expected a list of questions (or a mapping with only 'questions:')")
    return data


def _csv_entries(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        option_columns = [c for c in header if c.startswith("option_")]
        unknown = [c for c in header if c not in ("id", "text") and c not in option_columns]
        if unknown:
            raise SimulationInputError(
                str(path), None, None, unknown[0], "unknown CSV column; use id, text, option_1, option_2, ...")
        order = sorted(option_columns, key=lambda c: int(c[7:]) if c[7:].isdigit() else -1)
        if order and (not order[0][7:].isdigit() or [int(c[7:]) for c in order] != list(range(1, len(order) + 1))):
            raise SimulationInputError(
                str(path), None, None, None, f"option columns must be option_1..option_N, got {option_columns}")
        entries = []
        for index, record in enumerate(reader):
            cells = [(record.get(c) or "").strip() for c in order]
            while cells and not cells[-1]:
                cells.pop()
            entry: dict[str, Any] = {"text": record.get("text"), "options": cells}
            if record.get("id"):
                entry["id"] = record["id"]
            if None in record:  # more cells than header columns
                raise SimulationInputError(
                    str(path), index, record.get("id") or None, None, "has more cells than the header has columns")
            entries.append(entry)
    return entries


# ---------------------------------------------------------------------------------------------- countries
def wvs_countries(root: str | Path | None = None) -> list[str]:
    """Every WVS-7 country of the data (groups C1, C2, C3 in ``wvs7/countries.json``), sorted by name."""
    path = data_root(root) / "wvs7" / "countries.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: it lists the WVS countries a simulation can name")
    table = json.loads(path.read_text(encoding="utf-8"))
    return sorted(name for name, info in table.items() if set(info.get("groups", ())) & set(WVS_GROUPS))


def check_countries(countries: Sequence[str], known: Sequence[str], where: str = "countries") -> list[str]:
    """The countries, each checked against the known names; an unknown one gets the closest names suggested."""
    if isinstance(countries, str):
        raise SimulationInputError(
            where, None, None, None, f"must be a list of country names, got the string {countries!r}")
    if len(countries) == 0:
        raise SimulationInputError(where, None, None, None, "is empty: name at least one country")
    checked: list[str] = []
    for position, country in enumerate(countries):
        name = str(country).strip()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            close += [k for k in known if k.lower() == name.lower() and k not in close]
            hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else f"known: {', '.join(known)}"
            raise SimulationInputError(
                where, None, None, None, f"unknown country {name!r} (position {position}); {hint}")
        if name in checked:
            raise SimulationInputError(where, None, None, None, f"country {name!r} is listed twice")
        checked.append(name)
    return checked


# ---------------------------------------------------------------------------------------------- simulator
class Simulator:
    """A language model (plus an optional LoRA adapter) that predicts answer distributions per country.

    Args:
        model: a loaded :class:`simlab.model.LanguageModel` (the Simulator takes it over: an adapter is
            attached in place), or the keyword arguments of :func:`simlab.model.load_language_model`
            (e.g. ``{"embedded": "smollm2_135m_instruct"}`` or ``{"path": "/models/x"}``).
        adapter: a saved peft LoRA adapter folder; None simulates with the bare model.
        prompt_style / chat_template / answer_prefix / prompt_order: as the model was trained (``plain`` or
            ``chat``; ``paper`` or ``question_first``).
        batch_size: prompts per forward pass (grouped by length, padded per batch).
        shared_prefix: batch each question's countries together and compute the prompt prefix they share once
            (:mod:`simlab.shared_prefix`; the same shares as per-row batches, to float rounding).
        device: ``cuda``, ``cpu``...; None picks CUDA when available.
        max_length: the longest prompt allowed, in tokens; None: the model's own limit. Never truncated.
        known_countries: the names a simulation may use; None reads the WVS countries from ``data_root``.
        name: the model's name in every output (default: where it was loaded from).
        prior: the prior-anchored simulator's :class:`~simlab.priors.SurveyPrior` (an adapter trained on a prior
            needs it); new questions are looked up as survey ``simulate``, so only observed rows inform them.
        temperature: the calibration temperature (saved with the adapter by a calibrated fine-tune); None: 1.
    """

    def __init__(
        self,
        model: LanguageModel | Mapping[str, Any],
        adapter: str | Path | None = None,
        *,
        prompt_style: str = "plain",
        chat_template: str | None = None,
        answer_prefix: str = PAPER_ANSWER_PREFIX,
        instruction_template: str = PAPER_INSTRUCTION,
        prompt_order: str = "paper",
        shared_prefix: bool = False,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        max_length: int | None = None,
        data_root: str | Path | None = None,
        known_countries: Sequence[str] | None = None,
        name: str | None = None,
        prior=None,
        temperature: float | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if "{country}" not in instruction_template:
            raise ValueError(f"instruction_template must contain '{{country}}', got {instruction_template!r}")
        lm = model if isinstance(model, LanguageModel) else load_language_model(**dict(model))
        self.tokenizer = lm.tokenizer
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = load_adapter(lm.model, adapter) if adapter else lm.model
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.prompt = PromptFormat(
            style=prompt_style, answer_prefix=answer_prefix, chat_template=chat_template, order=prompt_order
        )
        self.shared_prefix = bool(shared_prefix)
        self.instruction_template = instruction_template
        self.batch_size = batch_size
        self.max_length = max_length if max_length is not None else model_max_length(self.model, self.tokenizer)
        self._data_root = data_root
        self._known = list(known_countries) if known_countries is not None else None
        self.prior, self.temperature = prior, temperature
        self.provenance = {
            "model": name or lm.source,
            "model_source": lm.source,
            "adapter": str(Path(adapter).expanduser().resolve()) if adapter else None,
            "prompt_style": prompt_style,
            "prompt_order": prompt_order,
            "prior": prior.settings if prior is not None else None,
            "temperature": temperature,
            "caution": CAUTION,
        }

    # ------------------------------------------------------------------ construction from a run
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], **overrides) -> Simulator:
        """From a resolved simlab config (what run.py saves as config_resolved.yaml): model, adapter, prompt."""
        model_cfg, data_cfg = cfg["model"], cfg.get("data") or {}
        loader = dict(model_cfg["loader"])
        target = loader.pop("_target_", "simlab.model.load_language_model")
        module_name, _, function_name = target.rpartition(".")
        lm = getattr(importlib.import_module(module_name), function_name)(**loader)
        kwargs: dict[str, Any] = {
            "adapter": model_cfg.get("adapter"),
            "prompt_style": model_cfg.get("prompt_style", "plain"),
            "chat_template": model_cfg.get("chat_template"),
            "answer_prefix": data_cfg.get("answer_prefix", PAPER_ANSWER_PREFIX),
            "prompt_order": data_cfg.get("prompt_order", "paper"),
            "shared_prefix": bool(data_cfg.get("shared_prefix", False)),
            "data_root": data_cfg.get("root"),
            "name": model_cfg.get("name"),
        }
        simulate_cfg = cfg.get("simulate") or {}
        for key in ("batch_size", "device", "max_length"):
            if simulate_cfg.get(key) is not None:
                kwargs[key] = simulate_cfg[key]
        observed = overrides.pop("observed", None)
        kwargs.update(overrides)
        adapter = kwargs.get("adapter")
        if "temperature" not in overrides and simulate_cfg.get("calibrated", True):
            saved = load_calibration(adapter)  # the temperature is part of a calibrated simulator
            kwargs["temperature"] = saved["temperature"] if saved else None
        if "prior" not in overrides:
            kwargs["prior"] = simulation_prior(cfg, lm, adapter, observed or [])
        return cls(lm, **kwargs)

    @classmethod
    def from_run(cls, run_dir: str | Path, **overrides) -> Simulator:
        """From a run directory: its config_resolved.yaml, and its trained ``adapter/`` when it has one."""
        import yaml

        run_dir = Path(run_dir).expanduser()
        config = run_dir / "config_resolved.yaml"
        if not config.is_file():
            raise FileNotFoundError(f"{run_dir} has no config_resolved.yaml: not a simlab run directory")
        cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
        if "adapter" not in overrides:
            trained = run_dir / "adapter"
            overrides["adapter"] = (str(trained) if (trained / "adapter_config.json").is_file()
                                    else cfg["model"].get("adapter"))
        return cls.from_config(cfg, **overrides)

    # ------------------------------------------------------------------ prediction
    def known_countries(self) -> list[str]:
        if self._known is None:
            self._known = wvs_countries(self._data_root)
        return self._known

    def predict(self, question: str, options: Sequence[str], countries: Sequence[str] | None = None,
                id: str | None = None):
        """One question's simulated distribution per country: a DataFrame (question_id, country, letter, option,
        share)."""
        return self.predict_questions([make_question(question, options, id)], countries)

    def predict_questions(self, questions: Sequence[Question], countries: Sequence[str] | None = None,
                          where: str = "countries"):
        """Every question x country, batched; rows in question, country, option order. attrs: provenance."""
        import pandas as pd

        if not questions:
            raise ValueError("no questions to simulate")
        known = self.known_countries()
        countries = check_countries(list(countries) if countries is not None else known, known, where)
        cells = [(q, c) for q in questions for c in countries]
        encoded = self._encode(cells)
        shares = self._score(encoded)
        records = []
        for (question, country), probs in zip(cells, shares):
            for letter, label, share in zip(question.letters, question.options, probs):
                records.append((question.id, country, letter, label, share))
        frame = pd.DataFrame.from_records(records, columns=COLUMNS)
        frame.attrs.update(self.provenance)
        frame.attrs["questions"] = {q.id: {"text": q.text, "options": list(q.options)} for q in questions}
        frame.attrs["countries"] = list(countries)
        return frame

    def prompt_text(self, question: Question, country: str) -> str:
        """The exact model input for one (question, country), as in training and evaluation."""
        instruction = self.instruction_template.format(country=country)
        return self.prompt.render_parts(instruction, question.prompt_input, question.lettered_options, self.tokenizer)

    def _encode(self, cells: list[tuple[Question, str]]) -> list[EncodedRow]:
        letters = LETTERS[: max(len(q.options) for q, _ in cells)]
        context = self.prompt_text(*cells[0])
        letter_ids = resolve_letter_ids(self.tokenizer, context, letters,
                                        add_special_tokens=self.prompt.add_special_tokens)
        encoded = []
        groups: dict[str, int] = {}
        for question, country in cells:
            ids = self.tokenizer(self.prompt_text(question, country),
                                 add_special_tokens=self.prompt.add_special_tokens)["input_ids"]
            if len(ids) > self.max_length:
                raise PromptTooLongError(
                    f"{input_location(question.source, question.index, question.id, 'text')}: "
                    f"the prompt for {country} has {len(ids)} tokens, more than the limit of {self.max_length} "
                    f"(the model's context, or max_length); shorten the question or its options "
                    f"(prompts are never truncated)",
                )
            key = self.prompt.prefix_key(question.prompt_input, question.lettered_options)
            log_prior = None
            if self.prior is not None:
                log_prior = np.log(self.prior.prior(cell_row(question, country))).tolist()
            encoded.append(EncodedRow(input_ids=list(ids), letter_ids=[letter_ids[l] for l in question.letters],
                                      target=[0.0] * len(question.letters),
                                      prefix_group=groups.setdefault(key, len(groups)), log_prior=log_prior))
        return encoded

    def _score(self, encoded: list[EncodedRow]) -> list[list[float]]:
        lengths = [len(e.input_ids) for e in encoded]
        if self.shared_prefix:  # one question's countries together, its prompt prefix computed once per batch
            sampler = PrefixGroupedBatchSampler(lengths, [e.prefix_group for e in encoded], self.batch_size,
                                                shuffle=False, num_replicas=1, rank=0)
            batches, collate = list(sampler), SharedPrefixCollator(self.tokenizer.pad_token_id)
        else:
            # longest first, as evaluation batches (little padding, memory problems show at once); every row, one
            # process
            order = sorted(range(len(encoded)), key=lambda i: (-lengths[i], i))
            batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
            collate = PadCollator(self.tokenizer.pad_token_id)
        shares: list[list[float] | None] = [None] * len(encoded)
        with torch.inference_mode():
            for batch_indices in batches:
                batch = collate([(i, encoded[i]) for i in batch_indices])
                batch = {k: v.to(self.device) for k, v in batch.items()}
                logits = simulator_logits(self.model, batch) / (self.temperature or 1.0)
                probs = masked_softmax(logits, batch["option_mask"])
                for row, row_probs, row_mask in zip(batch["row_index"].tolist(), probs, batch["option_mask"]):
                    shares[row] = row_probs[row_mask].double().cpu().tolist()
        return shares  # type: ignore[return-value]


SIMULATED_SURVEY = "simulate"  # new questions: their ids are the user's, never a survey's question numbers


def cell_row(question: Question, country: str, target: Sequence[float] | None = None) -> SurveyRow:
    """A (question, country) cell as a survey row of the ``simulate`` survey (for prior lookups)."""
    return SurveyRow(
        subset="simulate", question_id=question.id, country=country,
        instruction=PAPER_INSTRUCTION.format(country=country), question=question.prompt_input,
        options=question.lettered_options, letters=question.letters,
        target=tuple(target) if target is not None else tuple([1.0 / len(question.letters)] * len(question.letters)),
        n=None, source=question.source, index=question.index, survey=SIMULATED_SURVEY,
    )


def read_observed(path: str | Path, questions: Sequence[Question], known: Sequence[str]) -> list[SurveyRow]:
    """Surveyed distributions for some (question, country) cells, from a CSV with columns question_id, country,
    letter, share (simulation.csv's layout; option labels may be there too): the prior for the other countries.
    Every cell must give each of its question's letters exactly once, with shares summing to 1 or 100."""
    from .data.rows import SHARE_SCALES, SUM_TOLERANCE

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"observed distributions file {path} does not exist (simulate.observed)")
    by_id = {q.id: q for q in questions}
    cells: dict[tuple[str, str], dict[str, float]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("question_id", "country", "letter", "share") if c not in (reader.fieldnames or [])]
        if missing:
            raise SimulationInputError(str(path), None, None, None, f"missing column(s) {missing}")
        for line, record in enumerate(reader, start=2):
            def fail(field_name, message, line=line, record=record):
                return SimulationInputError(str(path), line, record.get("question_id"), field_name, message)

            question = by_id.get(record["question_id"])
            if question is None:
                raise fail("question_id", f"not one of the questions being simulated ({sorted(by_id)})")
            check_countries([record["country"]], known, f"{path}: line {line}: field 'country'")
            if record["letter"] not in question.letters:
                raise fail(
                    "letter", f"{record['letter']!r} is not one of the question's letters {list(question.letters)}")
            try:
                share = float(record["share"])
            except ValueError:
                raise fail("share", f"not a number: {record['share']!r}") from None
            if not np.isfinite(share) or share < 0:
                raise fail("share", f"must be a finite share >= 0, got {share}")
            cell = cells.setdefault((question.id, record["country"]), {})
            if record["letter"] in cell:
                raise fail("letter", f"{record['letter']} given twice for {record['country']}")
            cell[record["letter"]] = share
    rows = []
    for (question_id, country), shares in cells.items():
        question = by_id[question_id]
        where = f"{path}: question {question_id}, {country}"
        if set(shares) != set(question.letters):
            raise SimulationInputError(str(path), None, question_id, "letter",
                                       f"{country}: letters {sorted(shares)}, expected all of {list(question.letters)}")
        total = sum(shares.values())
        if not any(abs(total - scale) <= SUM_TOLERANCE * scale for scale in SHARE_SCALES):
            raise SimulationInputError(str(path), None, question_id, "share",
                                       f"{where}: shares sum to {total:g}, neither 100 nor 1")
        rows.append(cell_row(question, country, [shares[l] / total for l in question.letters]))
    return rows


def simulation_prior(cfg: Mapping[str, Any], lm, adapter: str | None, observed: Sequence[SurveyRow]):
    """The prior a simulation anchors on: the run's (prior config, or the prior saved with the adapter), built from
    the training rows plus the observed cells; with observed cells alone an equal-weight prior; else None."""
    from .priors import SurveyPrior, build_prior, load_prior_settings

    build = cfg.get("prior")
    build = {k: v for k, v in build.items() if not k.startswith("_")} if build else None
    saved = load_prior_settings(adapter)
    if build is None and saved is not None:
        build = saved["build"]
    if build is None:
        return SurveyPrior(observed) if observed else None
    from .data import SurveyDataModule

    datamodule = SurveyDataModule(tokenizer=None, **{k: v for k, v in cfg["data"].items() if k != "_target_"})
    datamodule.load_rows()
    countries = sorted({r.country for r in observed} | set(wvs_countries((cfg.get("data") or {}).get("root"))))
    return build_prior([*datamodule.prior_rows, *observed], model=lm.model, tokenizer=lm.tokenizer,
                       countries=countries, **build)


def model_max_length(model, tokenizer) -> int:
    """The longest input the model takes: its position limit, or the tokenizer's if that is smaller."""
    limits = [getattr(base_model(model).config, "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    limits = [int(v) for v in limits if isinstance(v, int) and 0 < v < 10**8]
    if not limits:
        raise ValueError("cannot tell the model's context length; pass max_length")
    return min(limits)


# ---------------------------------------------------------------------------------------------- the task
PROMPT_KEYS = ("prompt_order", "prompt_style")


def check_prompt_matches_adapter(cfg: Mapping[str, Any]) -> None:
    """An adapter answers the prompt it was trained on: when ``model.adapter`` is a simlab run's ``adapter/``
    (its run folder holds config_resolved.yaml), a different prompt order or style is an error naming the
    overrides that match it, not a silently worse simulation."""
    import yaml

    adapter = (cfg.get("model") or {}).get("adapter")
    trained = Path(adapter).parent / "config_resolved.yaml" if adapter else None
    if trained is None or not trained.is_file():
        return
    saved = (yaml.safe_load(trained.read_text(encoding="utf-8")) or {}).get("data") or {}
    asked = cfg.get("data") or {}
    differ = [k for k in PROMPT_KEYS if k in saved and saved[k] != asked.get(k)]
    if differ:
        fix = " ".join(f"model.{k}={saved[k]}" for k in differ)
        raise ValueError(f"{adapter} was trained on {', '.join(f'{k}={saved[k]}' for k in differ)} prompts "
                         f"({trained}), this run asks {', '.join(f'{k}={asked.get(k)}' for k in differ)}: add {fix}")


def simulate_task(cfg: Mapping[str, Any], out_dir: str | Path) -> dict:
    """``python run.py task=simulate``: read the questions, check the countries, simulate, write the outputs.

    ``cfg`` is the resolved config as plain containers. Inputs are checked before the model is loaded.
    """
    from .simulate_outputs import write_outputs

    sim_cfg = cfg.get("simulate") or {}
    if not sim_cfg.get("input"):
        raise ValueError("task=simulate needs simulate.input=FILE (YAML, JSON or CSV questions)")
    questions = read_questions(sim_cfg["input"])
    known = wvs_countries((cfg.get("data") or {}).get("root"))
    countries = (check_countries(sim_cfg["countries"], known, "simulate.countries") if sim_cfg.get("countries")
                 else known)
    observed = read_observed(sim_cfg["observed"], questions, known) if sim_cfg.get("observed") else []
    check_prompt_matches_adapter(cfg)
    simulator = Simulator.from_config(cfg, known_countries=known, observed=observed)
    frame = simulator.predict_questions(questions, countries, where="simulate.countries")
    frame.attrs["input"] = str(Path(sim_cfg["input"]).resolve())
    paths = write_outputs(frame, out_dir)
    log.info("simulated %d questions x %d countries with %s (adapter %s); outputs in %s",
             len(questions), len(countries), simulator.provenance["model"], simulator.provenance["adapter"], out_dir)
    log.warning(CAUTION)
    return {"task": "simulate", **{k: frame.attrs[k] for k in ("model", "model_source", "adapter", "prompt_style")},
            "questions": len(questions), "countries": countries, "outputs": [str(p) for p in paths], "caution": CAUTION}
