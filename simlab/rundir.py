"""A run folder's life: one run owns it, every output is written atomically, and status.json says how it ended.

status.json is written first (``running``, with pid, host and start time) and last (the outcome), so a folder
never looks finished unless it is:

* ``running``: under way, or killed without a word (the pid is gone; :func:`read_status` reports ``dead``);
* ``completed``: every output was written (outputs first, status.json last);
* ``failed``: an error stopped it (error and traceback);
* ``interrupted``: SIGINT/SIGTERM stopped it (the signal, the checkpoint to resume from, the command);
* ``skipped``: a sweep job whose model is not on this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any

# The names of a run folder's files, here and nowhere else (:class:`RunDir` reads and writes them).
STATUS_FILE = "status.json"
CONFIG_FILE = "config_resolved.yaml"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
RESULTS_FILE = "results.md"
LOG_FILE = "run.log"  # written by Hydra's job logging (named after run.py)
ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
STATUSES = ("running", "completed", "failed", "interrupted", "skipped")
# What runs write into their folder (Hydra's own .hydra/ and the log are not outputs of a run).
FIGURES_DIR = "figures"  # the run's figures for its W&B run (simlab.dashboard)
RUN_OUTPUTS = (
    STATUS_FILE, CONFIG_FILE, METRICS_FILE, PREDICTIONS_FILE, RESULTS_FILE, "invalid_rows.jsonl",
    ADAPTER_DIR, CHECKPOINT_DIR, "wandb", "csv", FIGURES_DIR,
    "simulation.csv", "simulation.meta.json", "simulation.md",
)
RUN_OUTPUT_PATTERNS = ("simulation_*.png",)


class RunDirError(RuntimeError):
    """A run folder that this run may not use as asked (holds another run, or cannot be resumed)."""


# ---------------------------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_writer(path: str | Path, newline: str | None = None) -> Iterator[IO[str]]:
    """A text handle to a temporary file beside ``path``; on success it is flushed, fsynced and renamed over
    ``path``, so a reader (or a killed writer) never sees half a file. On error the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    _failpoint(path)


def _failpoint(path: Path) -> None:
    """Fault injection for ``simlab.faults``: SIMLAB_FAILPOINT=kill-after:<file name> kills this process with
    SIGKILL right after that file is written (a run dying between two of its outputs)."""
    if os.environ.get("SIMLAB_FAILPOINT") == f"kill-after:{path.name}":
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_writer(path) as handle:
        handle.write(text)
    return Path(path)


def write_json(path: str | Path, payload) -> Path:
    return write_text(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------- status
def write_status(out: str | Path, status: str, overrides: list[str], **info) -> Path:
    """Write ``<out>/status.json`` atomically; ``info`` carries the reason, error, signal or checkpoint."""
    if status not in STATUSES:
        raise ValueError(f"run status must be one of {STATUSES}, got {status!r}")
    record = {"status": status, "overrides": list(overrides), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "pid": os.getpid(), "host": socket.gethostname(), **info}
    return write_json(Path(out) / STATUS_FILE, record)


def read_status(run_dir: str | Path) -> dict | None:
    """The run's status.json, or None when it has none. A ``running`` record whose process is gone from this
    host gets ``dead: true`` (killed without a word, e.g. kill -9 or a lost node)."""
    path = Path(run_dir) / STATUS_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable status file: {err}") from err
    if not isinstance(record, dict) or record.get("status") not in STATUSES:
        raise ValueError(f"{path}: field 'status' must be one of {STATUSES}, got {record.get('status')!r}")
    if record["status"] == "running":
        record["dead"] = not _process_alive(record.get("pid"), record.get("host"))
    return record


def _process_alive(pid, host) -> bool:
    """Whether ``pid`` still runs; a process on another host is assumed alive (we cannot tell)."""
    if host != socket.gethostname():
        return True
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------- claiming
def unique_run_dir(resume: str | None, base: str) -> str:
    """The run folder: ``resume`` when resuming, else ``<base>/<date>_<time>_<random>``. The random part keeps
    two runs started in the same second apart (Hydra creates the folder with exist_ok, so a timestamp alone
    would let them share it)."""
    if resume:
        return str(resume)
    return f"{base}/{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"


def leftover_outputs(out: str | Path) -> list[str]:
    """The run outputs already in ``out`` (another run's, or this run's before it was interrupted)."""
    out = Path(out)
    found = [name for name in RUN_OUTPUTS if (out / name).exists()]
    return found + sorted(p.name for pattern in RUN_OUTPUT_PATTERNS for p in out.glob(pattern))


def claim(out: str | Path, *, resume: bool = False, overwrite: bool = False) -> dict | None:
    """Make ``out`` this run's folder before anything is written; returns the previous status record (or None).

    A folder that holds another run's outputs is refused, unless this run resumes it (the previous run must
    have stopped: interrupted, failed, or dead) or ``overwrite`` is set (its outputs are removed first, so
    nothing of the old run is left beside the new one). A folder whose run is still alive is always refused.
    """
    out = Path(out)
    previous = read_status(out)
    alive = previous is not None and previous["status"] == "running" and not previous.get("dead")
    if alive:
        raise RunDirError(
            f"{out} belongs to a run that is still running (pid {previous.get('pid')} on {previous.get('host')}, "
            f"started {previous.get('started', previous.get('time'))}); wait for it or stop it first"
        )
    leftovers = leftover_outputs(out)
    if resume:
        if previous is None:
            raise RunDirError(f"resume={out}: no status.json there, so no simlab run to resume")
        if previous["status"] in ("completed", "skipped"):
            raise RunDirError(f"resume={out}: that run is already {previous['status']}; nothing to resume")
        return previous
    if leftovers:
        if not overwrite:
            state = previous["status"] if previous else "no status"
            raise RunDirError(
                f"{out} already holds another run's outputs ({state}: {', '.join(leftovers)}). Use a new folder "
                f"(the default hydra.run.dir is always new), resume that run with resume={out}, or pass "
                f"overwrite=true to delete its outputs first"
            )
        for name in leftovers:
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    return previous


def config_differences(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs (``ignore``: top-level keys to skip)."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    keys = sorted((set(flat_old) | set(flat_new))
                  - {k for k in set(flat_old) | set(flat_new) if k.split(".")[0] in ignore})
    missing = object()
    return [f"{k}: {flat_old.get(k, '<absent>')!r} -> {flat_new.get(k, '<absent>')!r}"
            for k in keys if flat_old.get(k, missing) != flat_new.get(k, missing)]


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        flat: dict = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


# ---------------------------------------------------------------------------------------------- metrics.json
class _Unset:
    """A metrics.json key that is absent (None is a value that is written: ``"adapter": null``)."""

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Any = _Unset()


def _key(recomputed: bool = False) -> Any:
    """A metrics.json key; ``recomputed``: simlab.reanalyse computes it again from the predictions."""
    return field(default=UNSET, metadata={"recomputed": recomputed})


@dataclass
class RunMetrics:
    """The schema of metrics.json: every key a run (or a re-analysis) writes, in the order it writes them.

    Absent keys are :data:`UNSET` and not written; ``None`` is written as ``null``. A task writes only its own
    keys (a baseline has no ``adapter``, a model run no ``baseline``). Keys this schema does not know (written by
    a newer analysis) are kept in ``extra``. :meth:`from_dict` keeps the order of the keys it read, so
    ``RunMetrics.from_dict(d).to_dict() == d`` with the same key order: reading and writing moves nothing."""

    # what ran
    task: str = _key()
    baseline: str = _key()  # a baseline's name and its fitted state
    baseline_report: dict = _key()
    resumed_from: dict = _key()  # the checkpoint an interrupted fine-tune resumed from
    best_valid: dict = _key()  # a fine-tune's best validation score (metric, value, checkpoint): a search's objective
    model: str = _key()
    model_source: str = _key()
    adapter: str | None = _key()
    loss: str | None = _key()
    prior: dict | None = _key()
    calibration: dict = _key()  # the temperature of the calibrated simulator, and the scores before it
    uncalibrated: dict = _key()
    prompt_style: str = _key()
    settings: dict = _key()
    seed: int = _key()
    overrides: list = _key()
    code: dict | None = _key()  # simlab.provenance.git_state at the start of the run
    rows: dict = _key(recomputed=True)  # rows per subset
    wall_time_s: float = _key()
    # the scores: per subset ({metric: value, "n": rows}) and the paper's average
    subsets: dict = _key(recomputed=True)
    paper_average: dict | None = _key(recomputed=True)
    paper_average_subsets: list = _key(recomputed=True)
    paper_average_missing: list = _key(recomputed=True)
    # the analysis after the test pass (simlab.results.analyse)
    position_bias: dict = _key(recomputed=True)
    noise_ceiling: dict = _key(recomputed=True)
    calibrated: dict = _key(recomputed=True)
    # a re-analysis (simlab.reanalyse)
    reanalysed_from: str = _key()
    reanalysis_code: dict | None = _key()
    limit_eval_per_subset: int = _key()
    # keys this schema does not name, and the order of every key as read
    extra: dict = field(default_factory=dict, metadata={"recomputed": False})
    _order: tuple = field(default=(), repr=False, compare=False, metadata={"recomputed": False})

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The metrics.json keys the schema names, in the order a run writes them."""
        return tuple(f.name for f in fields(cls) if f.name not in ("extra", "_order"))

    @classmethod
    def recomputed_keys(cls) -> tuple[str, ...]:
        """The keys simlab.reanalyse computes again from a run's predictions (the others are kept as they were)."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("recomputed"))

    @classmethod
    def from_dict(cls, metrics: dict) -> RunMetrics:
        if not isinstance(metrics, dict):
            raise ValueError(f"metrics must be a JSON object, got {type(metrics).__name__}")
        known = set(cls.keys())
        subsets = metrics.get("subsets", {})
        if not isinstance(subsets, dict) or not all(isinstance(v, dict) for v in subsets.values()):
            raise ValueError("metrics: 'subsets' must map each subset to its {metric: value}")
        return cls(**{k: v for k, v in metrics.items() if k in known},
                   extra={k: v for k, v in metrics.items() if k not in known}, _order=tuple(metrics))

    def to_dict(self) -> dict:
        """The metrics.json object: the keys read (in their order), then the others set, in the schema's order."""
        values = {k: getattr(self, k) for k in self.keys() if getattr(self, k) is not UNSET}
        values.update(self.extra)
        ordered = {k: values.pop(k) for k in self._order if k in values}
        return {**ordered, **values}


# ---------------------------------------------------------------------------------------------- the folder
class RunDir:
    """One run folder: the names of its files and how each is read and written (atomically), in one place.

    ``config_resolved.yaml`` (the resolved config), ``predictions.jsonl`` (one line per tested row),
    ``results.md`` (the tables), ``metrics.json`` (:class:`RunMetrics`), ``status.json`` (the run's fate, written
    first and last), ``run.log``, ``adapter/`` (a fine-tune's LoRA adapter) and ``checkpoints/last.ckpt``."""

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
        """The run's resolved config as plain containers."""
        import yaml

        if not self.config_file.is_file():
            raise FileNotFoundError(f"{self.config_file} does not exist (is {self.path} a simlab run directory?)")
        return yaml.safe_load(self.config_file.read_text(encoding="utf-8"))

    # ------------------------------------------------------------------ metrics
    def write_metrics(self, metrics: RunMetrics | dict) -> Path:
        if not isinstance(metrics, RunMetrics):
            metrics = RunMetrics.from_dict(metrics)
        return write_json(self.metrics_file, metrics.to_dict())

    def read_metrics(self) -> dict:
        """metrics.json as written (a dict; :meth:`RunMetrics.from_dict` gives the typed view)."""
        if not self.metrics_file.is_file():
            raise FileNotFoundError(f"{self.metrics_file} does not exist (is {self.path} a finished simlab run?)")
        return json.loads(self.metrics_file.read_text(encoding="utf-8"))

    # ------------------------------------------------------------------ predictions and tables
    def write_predictions(self, rows: dict, predictions: dict, **extra: dict) -> int:
        """One JSON line per tested row (simlab.results.write_predictions); returns the number written."""
        from .results import write_predictions

        return write_predictions(self.predictions_file, rows, predictions, **extra)

    def read_predictions(self, subset: str | None = None) -> list[dict]:
        """predictions.jsonl's records in file order (only ``subset``'s when given)."""
        return [record for _, record in self.iter_predictions(subset)]

    def iter_predictions(self, subset: str | None = None) -> Iterator[tuple[int, dict]]:
        """(line number, record) for each line of predictions.jsonl (blank lines skipped)."""
        if not self.predictions_file.is_file():
            raise FileNotFoundError(f"{self.predictions_file} does not exist (is {self.path} a simlab run directory?)")
        with open(self.predictions_file, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if subset is None or record["subset"] == subset:
                    yield line_number, record

    def count_predictions(self) -> int:
        with open(self.predictions_file, encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())

    def write_results(self, table: str) -> Path:
        return write_text(self.results_file, table)

    # ------------------------------------------------------------------ status
    def write_status(self, status: str, overrides: list[str], **info) -> Path:
        return write_status(self.path, status, overrides, **info)

    def read_status(self) -> dict | None:
        return read_status(self.path)

    def claim(self, *, resume: bool = False, overwrite: bool = False) -> dict | None:
        return claim(self.path, resume=resume, overwrite=overwrite)


def sqlite_storage(path: str) -> str:
    """``sqlite:///<path>`` with the folder made first: an Optuna study under a sweep folder that Hydra has not
    created yet (the sweeper opens its storage before the first job runs)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"
