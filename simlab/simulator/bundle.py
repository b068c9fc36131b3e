"""The trained simulator as one folder (``<run dir>/adapter/``): the LoRA weights, ``simulator.json`` (what the
simulator is: base model, prompt, LoRA, prior, training data, code), ``prior.json`` (the fitted prior) and
``calibration.json`` (the temperature and the prediction intervals). This module alone reads and writes that folder,
and :func:`load_simulator` is the one way to a ready simulator (evaluation, ``task=simulate``,
:class:`simlab.simulate.Simulator`).

An adapter answers the prompt it was trained on: loading one applies its own settings; a setting asked
explicitly that contradicts them is an error naming both, unless mismatches are allowed (then they are recorded).
Folders written before the manifest still load, with a warning naming what was assumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST_FILE = "simulator.json"
PRIOR_FILE = "prior.json"
CALIBRATION_FILE = "calibration.json"
ADAPTER_CONFIG = "adapter_config.json"
FORMAT = 1
# the settings an adapter imposes on whoever loads it (an explicit contradiction is an error)
PROMPT_SETTINGS = ("prompt_order", "prompt_style", "chat_template")
CHECKED = (*PROMPT_SETTINGS, "base_model", "prior")
# taken from the adapter unless asked otherwise, never an error: the same simulator up to float rounding
SOFT = ("shared_prefix", "dtype")
DEFAULTS = {"prompt_order": "paper", "prompt_style": "plain", "chat_template": None, "shared_prefix": False}


class AdapterMismatch(ValueError):
    """A run asks for a setting that contradicts what the adapter was trained with."""


# ---------------------------------------------------------------------------------------------- the files
def is_adapter(folder: str | Path | None) -> bool:
    return bool(folder) and (Path(folder).expanduser() / ADAPTER_CONFIG).is_file()


def _read_json(path: Path, required: Sequence[str]) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(record).__name__}")
    for key in required:
        if key not in record:
            raise ValueError(f"{path}: field {key!r} missing")
    return record


def save_prior_settings(adapter_dir: str | Path, prior, build: Mapping) -> Path:
    """An adapter trained on a prior predicts residuals to it: how to rebuild it and what was fitted, saved beside
    it so evaluation and simulation anchor it the same way."""
    from simlab.common.files import write_json

    return write_json(Path(adapter_dir) / PRIOR_FILE, {"build": dict(build), "fitted": prior.settings})


def load_prior_settings(adapter_dir: str | Path | None) -> dict | None:
    """The adapter's prior.json ({build: build_prior's arguments, fitted: what was fitted}), or None."""
    if not adapter_dir or not (Path(adapter_dir) / PRIOR_FILE).is_file():
        return None
    return _read_json(Path(adapter_dir) / PRIOR_FILE, ["build"])


def save_calibration(adapter_dir: str | Path, temperature: float, fitted_on: str, rows: int,
                     intervals: Mapping | None = None) -> Path:
    """The temperature (and the prediction intervals fitted after it, :mod:`simlab.simulator.intervals`) become
    part of the simulator: saved beside the adapter, applied wherever it is loaded."""
    from simlab.common.files import write_json
    from simlab.simulator.temperature import check_temperature

    record = {"temperature": check_temperature(temperature), "fitted_on": fitted_on, "rows": int(rows)}
    if intervals is not None:
        record["intervals"] = dict(intervals)
    return write_json(Path(adapter_dir) / CALIBRATION_FILE, record)


def load_calibration(adapter_dir: str | Path | None) -> dict | None:
    """The adapter's saved calibration ({temperature, fitted_on, rows[, intervals]}), or None when it has none.
    A calibration.json from before intervals existed has no ``intervals``: it loads unchanged, without them."""
    from simlab.simulator.intervals import ConformalIntervals
    from simlab.simulator.temperature import check_temperature

    if not adapter_dir or not (Path(adapter_dir) / CALIBRATION_FILE).is_file():
        return None
    path = Path(adapter_dir) / CALIBRATION_FILE
    record = _read_json(path, ["temperature"])
    check_temperature(record["temperature"])
    if record.get("intervals") is not None:
        ConformalIntervals.from_dict(record["intervals"], where=f"{path}: field 'intervals'")
    return record


def saved_intervals(calibration: Mapping | None, where: str = CALIBRATION_FILE):
    """The :class:`simlab.simulator.intervals.ConformalIntervals` of a saved calibration, or None (no
    calibration, or one saved before simlab fitted intervals)."""
    from simlab.simulator.intervals import ConformalIntervals

    if not calibration or calibration.get("intervals") is None:
        return None
    return ConformalIntervals.from_dict(calibration["intervals"], where=f"{where}: field 'intervals'")


# ---------------------------------------------------------------------------------------------- the manifest
def training_fingerprint(files: Iterable[str | Path], subset: str | None, rows: Sequence | None = None) -> dict:
    """Which data trained the adapter: each file's sha256, the training subset, and (when given) the sha256 of
    the training rows as they were used (sampled, with the settings applied) and their number."""
    fingerprint: dict[str, Any] = {
        "files": {Path(f).name: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files},
        "subset": subset,
    }
    if rows is not None:
        digest = hashlib.sha256()
        for row in rows:
            record = [row.survey, row.question_id, row.country, row.instruction, row.question, list(row.options),
                      list(row.letters), [float(t) for t in row.target]]
            digest.update(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
        fingerprint.update(rows=len(rows), rows_sha256=digest.hexdigest())
    return fingerprint


def manifest_from_config(cfg: Mapping[str, Any], *, prior_build: Mapping | None, data: Mapping | None,
                         code: Mapping | None) -> dict:
    """simulator.json's content from a resolved run config (plain containers, as config_resolved.yaml holds)."""
    model_cfg, data_cfg = cfg["model"], cfg.get("data") or {}
    loader = dict(model_cfg.get("loader") or {})
    return {
        "format": FORMAT,
        "base_model": {"name": model_cfg.get("name"), "loader": loader},
        "prompt": {
            "prompt_order": data_cfg.get("prompt_order", model_cfg.get("prompt_order", "paper")),
            "prompt_style": data_cfg.get("prompt_style", model_cfg.get("prompt_style", "plain")),
            "chat_template": data_cfg.get("chat_template", model_cfg.get("chat_template")),
            "answer_prefix": data_cfg.get("answer_prefix"),
            "country_pattern": data_cfg.get("country_pattern"),
            # how prompts named subgroups (data=wvs_populations), so a simulator renders them as training did
            **({"population_wording": data_cfg["population_wording"]} if data_cfg.get("population_wording") else {}),
        },
        "shared_prefix": bool(data_cfg.get("shared_prefix", model_cfg.get("shared_prefix", False))),
        "lora": {k: v for k, v in (model_cfg.get("lora") or {}).items() if not str(k).startswith("_")} or None,
        "prior": dict(prior_build) if prior_build is not None else None,
        "training_data": dict(data) if data is not None else None,
        "code": dict(code) if code is not None else None,
    }


def write_manifest(adapter_dir: str | Path, manifest: Mapping[str, Any]) -> Path:
    from simlab.common.files import write_json

    return write_json(Path(adapter_dir) / MANIFEST_FILE, dict(manifest))


def read_manifest(adapter_dir: str | Path) -> dict | None:
    """The adapter's simulator.json, checked; None for a folder written before it existed."""
    path = Path(adapter_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    manifest = _read_json(path, ["format", "base_model", "prompt", "prior"])
    if manifest["format"] != FORMAT:
        raise ValueError(f"{path}: format {manifest['format']!r}, this simlab reads format {FORMAT}")
    for key in PROMPT_SETTINGS:
        if key not in manifest["prompt"]:
            raise ValueError(f"{path}: field 'prompt.{key}' missing")
    if not isinstance(manifest["base_model"], dict) or "loader" not in manifest["base_model"]:
        raise ValueError(f"{path}: field 'base_model.loader' missing")
    return manifest


@dataclass
class Bundle:
    """An adapter folder as read: the settings it imposes (``settings``: prompt, base model, prior, soft
    settings), its calibration, and for a folder without simulator.json what was assumed (``assumed``)."""

    path: Path
    settings: dict[str, Any]
    manifest: dict | None = None
    calibration: dict | None = None
    prior_fitted: dict | None = None
    assumed: str | None = None

    @property
    def population_wording(self) -> dict | None:
        """How the training prompts named subgroups (simulator.json's optional ``prompt.population_wording``),
        None for an adapter trained without population rows or written before it was recorded."""
        return ((self.manifest or {}).get("prompt") or {}).get("population_wording")


def _identity(loader: Mapping | None) -> dict:
    """Which weights a loader loads (not how: its dtype is a soft setting); unset arguments dropped."""
    return {k: v for k, v in (loader or {}).items() if k not in ("dtype", "_target_") and v is not None}


_WARNED: set[str] = set()


def read_bundle(adapter_dir: str | Path) -> Bundle:
    """The adapter folder's simulator. Without simulator.json: the prompt of the run that trained it when its run
    folder holds config_resolved.yaml, else nothing is imposed; either way a warning says what was assumed."""
    from simlab.model.adapters import check_adapter_files

    path = Path(adapter_dir).expanduser()
    check_adapter_files(path)  # a damaged adapter_config.json or weights file fails here, before any model loads
    saved_prior = load_prior_settings(path)
    calibration = load_calibration(path)
    if calibration is not None and calibration.get("intervals") is None and f"{path}:intervals" not in _WARNED:
        _WARNED.add(f"{path}:intervals")
        log.info("%s/%s has no prediction intervals (saved before simlab fitted them): none are available",
                 path, CALIBRATION_FILE)
    fitted = saved_prior.get("fitted") if saved_prior else None
    manifest = read_manifest(path)
    if manifest is not None:
        settings = {k: manifest["prompt"][k] for k in PROMPT_SETTINGS}
        settings.update(base_model=_identity(manifest["base_model"]["loader"]), prior=manifest["prior"])
        settings["dtype"] = manifest["base_model"]["loader"].get("dtype")
        if "shared_prefix" in manifest:
            settings["shared_prefix"] = manifest["shared_prefix"]
        return Bundle(path, settings, manifest, calibration, fitted)
    settings: dict[str, Any] = {}
    if saved_prior is not None:
        settings["prior"] = saved_prior["build"]
    trained = path.parent / "config_resolved.yaml"
    if trained.is_file():
        import yaml

        data_cfg = (yaml.safe_load(trained.read_text(encoding="utf-8")) or {}).get("data") or {}
        settings.update({k: data_cfg[k] for k in PROMPT_SETTINGS if k in data_cfg})
        assumed = f"the prompt of the run that trained it ({trained}: " + ", ".join(
            f"{k}={data_cfg[k]}" for k in PROMPT_SETTINGS if k in data_cfg) + ")"
    else:
        assumed = "nothing about its prompt or base model (this run's settings are used unchecked)"
    if str(path) not in _WARNED:  # once per folder: a run reads it more than once
        _WARNED.add(str(path))
        log.warning("%s has no %s (written before simlab recorded it): assumed %s", path, MANIFEST_FILE, assumed)
    return Bundle(path, settings, None, calibration, fitted, assumed)


# ---------------------------------------------------------------------------------------------- the settings
def resolve_settings(bundle: Bundle | None, asked: Mapping[str, Any], explicit: Iterable[str] = (),
                     allow_mismatch: bool = False, names: Mapping[str, str] | None = None,
                     hint: str = "add model.allow_mismatch=true to score it anyway",
                     ) -> tuple[dict[str, Any], list[dict]]:
    """(the settings to use, the mismatches allowed). A setting the adapter records is taken from it unless it
    was asked explicitly; an explicit one that contradicts a checked setting is :class:`AdapterMismatch` naming
    both values, unless ``allow_mismatch`` (then it is used and returned as a mismatch). ``names``: how each
    setting is written where it was asked (e.g. ``model.prompt_order``), and ``hint`` how to allow it, for the
    messages."""
    names, explicit = dict(names or {}), set(explicit)
    resolved, mismatches = dict(asked), []
    if bundle is None:
        return resolved, mismatches
    for key, trained in bundle.settings.items():
        if key not in asked:
            resolved[key] = trained
            continue
        wanted = asked[key]
        same = _identity(wanted) == trained if key == "base_model" else wanted == trained
        if same:
            continue
        name = names.get(key, key)
        if key not in explicit:
            log.info("%s: %s=%s from the adapter (this run had %s)", bundle.path, name, trained, wanted)
            resolved[key] = trained
        elif key in SOFT:
            log.info("%s: %s=%s as asked (the adapter was trained with %s)", bundle.path, name, wanted, trained)
        elif allow_mismatch:
            log.warning("%s was trained with %s=%s; this run asks %s=%s (allowed: recorded in metrics.json)",
                        bundle.path, name, trained, name, wanted)
            mismatches.append({"setting": name, "adapter": trained, "run": wanted})
        else:
            raise AdapterMismatch(
                f"adapter {bundle.path} was trained with {name}={_show(trained)}; this run asks "
                f"{name}={_show(wanted)} ({hint})")
    return resolved, mismatches


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


# ---------------------------------------------------------------------------------------------- the simulator
@dataclass
class LoadedSimulator:
    """A ready simulator: the language model with its adapter, the prompt settings it answers, its prior and
    temperature; ``mismatches``: settings asked against the adapter's and allowed."""

    lm: Any
    adapter: str | None
    settings: dict[str, Any]
    prior: Any = None
    prior_build: dict | None = None
    calibration: dict | None = None
    bundle: Bundle | None = None
    mismatches: list = field(default_factory=list)

    @property
    def temperature(self) -> float | None:
        return self.calibration["temperature"] if self.calibration else None

    @property
    def intervals(self):
        """The prediction intervals saved with the temperature (:mod:`simlab.simulator.intervals`), or None."""
        return saved_intervals(self.calibration, f"{self.adapter}/{CALIBRATION_FILE}")


ASK = object()  # an argument not given


def load_simulator(model, adapter: str | Path | None = None, *, trainable: bool = False, lora=None,
                   prior: Mapping | None | object = ASK, prior_rows: Sequence | Callable[[], Sequence] | None = None,
                   countries: Sequence[str] | Callable[[], Sequence[str]] = (),
                   settings: Mapping[str, Any] | None = None, explicit: Iterable[str] = (),
                   allow_mismatch: bool = False, names: Mapping[str, str] | None = None,
                   bundle: Bundle | None = None, hint: str | None = None) -> LoadedSimulator:
    """The simulator of ``adapter`` (a saved adapter folder; None: the bare ``model``, or a fresh LoRA ``lora``
    to train) on ``model`` (a :class:`simlab.model.LanguageModel`, or a loader config: ``_target_`` plus the
    loader's arguments; default :func:`simlab.model.load_language_model`).

    ``settings`` / ``prior`` (build_prior's arguments, None: no prior) are what the caller asks; the adapter's
    own are used for anything not asked, and ``explicit`` ones that contradict them fail (:func:`resolve_settings`).
    The prior is built from ``prior_rows`` for ``countries`` (lists, or functions giving them: read only when a
    prior is needed);
    with ``prior_rows=None`` it is not built (``prior_build`` still says what it would be)."""
    from simlab.model import LanguageModel, attach_lora, load_adapter

    if adapter and bundle is None:
        bundle = read_bundle(adapter)
    asked = dict(settings or {})
    if prior is not ASK:
        asked["prior"] = dict(prior) if prior is not None else None
    if not isinstance(model, LanguageModel):
        asked.setdefault("base_model", {k: v for k, v in dict(model).items() if k != "_target_"})
        asked.setdefault("dtype", dict(model).get("dtype"))
    resolved, mismatches = resolve_settings(bundle, asked, explicit, allow_mismatch, names,
                                            **({"hint": hint} if hint else {}))
    if isinstance(model, LanguageModel):
        lm = model
    else:
        lm = load_model(model, resolved.get("base_model"), resolved.get("dtype"))
    if adapter:
        lm.model = load_adapter(lm.model, adapter, trainable=trainable)
    elif lora is not None:
        lm.model = attach_lora(lm.model, lora)
    build = resolved.get("prior")
    built = None
    if build is not None and prior_rows is not None:
        from simlab.simulator.prior import build_prior

        if bundle is not None and bundle.settings.get("prior") == build:
            log.info("using the prior saved with %s: %s", adapter, build)
        rows = prior_rows() if callable(prior_rows) else prior_rows
        names = countries() if callable(countries) else countries
        built = build_prior(rows, model=lm.model, tokenizer=lm.tokenizer, countries=names, **build)
        log.info("prior from %d rows: %s", len(rows), built.settings)
    return LoadedSimulator(lm=lm, adapter=str(adapter) if adapter else None, settings=resolved, prior=built,
                           prior_build=dict(build) if build is not None else None,
                           calibration=bundle.calibration if bundle else None, bundle=bundle, mismatches=mismatches)


def load_model(loader: Mapping[str, Any], identity: Mapping | None = None, dtype: str | None = None):
    """The language model of a loader config (``_target_``: the function, default
    :func:`simlab.model.load_language_model`); ``identity`` / ``dtype``: the weights to load instead (the
    adapter's base model). Hydra locates the function; it is called directly, so its errors reach the caller."""
    from hydra.utils import get_method

    arguments = dict(loader)
    target = arguments.pop("_target_", "simlab.model.load_language_model")
    if identity is not None and _identity(arguments) != _identity(identity):
        arguments = _identity(identity)
    if dtype is not None:
        arguments["dtype"] = dtype
    return get_method(target)(**arguments)


def save_simulator(model, adapter_dir: str | Path, manifest: Mapping[str, Any], *, prior=None,
                   prior_build: Mapping | None = None) -> Path:
    """Write a trained simulator: the peft adapter (``model.save_pretrained``, or nothing when ``model`` is None
    because it was written from a checkpoint), its prior.json and its simulator.json."""
    adapter_dir = Path(adapter_dir)
    if model is not None:
        model.save_pretrained(str(adapter_dir))
    if prior is not None:
        save_prior_settings(adapter_dir, prior, prior_build or {})
    write_manifest(adapter_dir, manifest)
    return adapter_dir
