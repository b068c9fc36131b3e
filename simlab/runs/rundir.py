"""One run folder: the names of its files and how each is read and written (atomically), in one place."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from simlab.common.files import write_json, write_text
from simlab.runs import predictions as predictions_file
from simlab.runs.metrics_file import RunMetrics
from simlab.runs.names import (
    ADAPTER_DIR,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    FIGURES_DIR,
    LAST_CHECKPOINT,
    LOG_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RESULTS_FILE,
    STATUS_FILE,
)
from simlab.runs.status import claim, read_status, write_status


class RunDir:
    """One run folder: the names of its files and how each is read and written (atomically), in one place.

    ``config_resolved.yaml`` (the resolved config), ``predictions.jsonl`` (one line per tested row),
    ``results.md`` (the tables), ``metrics.json`` (:class:`RunMetrics`), ``status.json`` (the run's fate, written
    first and last), ``run.log``, ``adapter/`` (a fine-tune's LoRA adapter), ``checkpoints/last.ckpt`` and
    ``figures/`` (the figures of its W&B run)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ names
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def predictions_file(self) -> Path:
        return self.path / PREDICTIONS_FILE

    @property
    def results_file(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def status_file(self) -> Path:
        return self.path / STATUS_FILE

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    @property
    def adapter_dir(self) -> Path:
        return self.path / ADAPTER_DIR

    @property
    def figures_dir(self) -> Path:
        return self.path / FIGURES_DIR

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / LAST_CHECKPOINT

    def is_run(self) -> bool:
        """Whether the folder looks like a run (status, metrics, resolved config, or Hydra's .hydra/)."""
        return any((self.path / name).exists() for name in (STATUS_FILE, METRICS_FILE, ".hydra", CONFIG_FILE))

    # ------------------------------------------------------------------ config
    def write_config(self, resolved_yaml: str) -> Path:
        return write_text(self.config_file, resolved_yaml)

    def read_config(self) -> dict:
        """The run's resolved config as plain containers. A folder may come from anyone (shared storage, a
        download), so every ``_target_`` in it must be one of simlab's own configs' (:data:`TRUSTED_TARGETS`):
        a config naming e.g. ``subprocess.check_call`` is refused before anything could instantiate it."""
        import yaml

        if not self.config_file.is_file():
            raise FileNotFoundError(f"{self.config_file} does not exist (is {self.path} a simlab run directory?)")
        config = yaml.safe_load(self.config_file.read_text(encoding="utf-8"))
        for key, target in targets(config):
            if not target.startswith(TRUSTED_TARGETS):
                raise ValueError(f"{self.config_file}: {key}._target_ = {target!r} is not one of simlab's own "
                                 f"targets ({', '.join(TRUSTED_TARGETS)}*): refused, a run folder's config never "
                                 f"runs code from elsewhere")
        return config

    # ------------------------------------------------------------------ metrics
    def write_metrics(self, metrics: RunMetrics | dict) -> Path:
        if not isinstance(metrics, RunMetrics):
            metrics = RunMetrics.from_dict(metrics)
        return write_json(self.metrics_file, metrics.to_dict())

    def read_metrics(self) -> dict:
        """metrics.json as written (a dict; :meth:`RunMetrics.from_dict` gives the typed view)."""
        if not self.metrics_file.is_file():
            raise FileNotFoundError(f"{self.metrics_file} does not exist (is {self.path} a finished simlab run?)")
        try:
            return json.loads(self.metrics_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{self.metrics_file}: not a readable metrics file: {err}") from err

    # ------------------------------------------------------------------ predictions and tables
    def write_predictions(self, rows: dict, predictions: dict, **extra: dict) -> int:
        """One JSON line per tested row (:mod:`simlab.runs.predictions`); returns the number written."""
        return predictions_file.write_predictions(self.predictions_file, rows, predictions, **extra)

    def read_predictions(self, subset: str | None = None) -> list[dict]:
        """predictions.jsonl's records in file order (only ``subset``'s when given)."""
        return predictions_file.read_predictions(self.predictions_file, subset)

    def records_by_row(self, subset: str) -> dict[predictions_file.RowKey, dict]:
        """``subset``'s records keyed by (country, question id); a row seen twice is an error."""
        return predictions_file.records_by_row(self.predictions_file, subset)

    def predictions_for_rows(self, rows: dict) -> dict[str, list[list[float]]]:
        """Each tested subset's predictions in row order, every line checked against its row of ``rows``."""
        return predictions_file.predictions_for_rows(self.predictions_file, rows)

    def iter_predictions(self, subset: str | None = None) -> Iterator[tuple[int, dict]]:
        """(line number, record) for each line of predictions.jsonl (blank lines skipped)."""
        return predictions_file.iter_predictions(self.predictions_file, subset)

    def count_predictions(self) -> int:
        return predictions_file.count_predictions(self.predictions_file)

    def write_results(self, table: str) -> Path:
        return write_text(self.results_file, table)

    # ------------------------------------------------------------------ status
    def write_status(self, status: str, overrides: list[str], **info) -> Path:
        return write_status(self.path, status, overrides, **info)

    def read_status(self) -> dict | None:
        return read_status(self.path)

    def claim(self, *, resume: bool = False, overwrite: bool = False, force: bool = False,
              overrides: list[str] | None = None, **running: object) -> dict | None:
        return claim(self.path, resume=resume, overwrite=overwrite, force=force, overrides=overrides, **running)


# What the configs under conf/ instantiate (tests/test_claims.py checks that this covers every one of them).
TRUSTED_TARGETS = ("simlab.", "torch.optim.", "pytorch_lightning.", "peft.", "optuna.samplers.", "hydra_plugins.")


def targets(node, key: str = "") -> list[tuple[str, str]]:
    """(dotted key, ``_target_``) for every ``_target_`` in a plain config."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            found.append((key or "<root>", node["_target_"]))
        for name, value in node.items():
            found += targets(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += targets(value, f"{key}[{index}]")
    return found
