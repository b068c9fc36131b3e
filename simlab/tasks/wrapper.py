"""One wrapper around every task: claim the run folder, record the run's fate in status.json, turn signals into
an interruption that can be resumed.

status.json says ``running`` first and the outcome last: ``completed``; ``interrupted`` by SIGINT/SIGTERM (with
the checkpoint and the command that resumes it; exit code 128 + the signal); ``skipped`` in a sweep when the
model is not on this machine (the sweep goes on); ``failed`` otherwise (the error is logged to run.log and
re-raised, so Hydra still runs a sweep's remaining jobs and then exits with the error)."""

from __future__ import annotations

import functools
import logging
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from simlab.runs.names import CONFIG_FILE
from simlab.runs.rundir import RunDir
from simlab.runs.status import RunDirError
from simlab.tasks.common import is_multirun, job_overrides
from simlab.tasks.inputs import check_before_overwrite

log = logging.getLogger("simlab")

Task = Callable[[DictConfig], dict]
# errors that are the user's to fix (a bad setting, file or folder): one line, not a traceback, when the run was
# started from the command line (run.py / simlab run set ONE_LINE_ERRORS); in Python (simlab.evaluate, tests) they raise
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, RunDirError)
ONE_LINE_ERRORS = False


def task_wrapper(task: Task) -> Task:
    """``task(cfg)`` run as one job of a run folder (``cfg.paths.output_dir``): resume checks (``resume=<dir>``),
    the folder claimed and status.json ``running`` (rank zero only: one set of outputs per job, however many
    processes train it), the resolved config written, the seed set; then the task, and its outcome in status.json."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> dict | None:
        from simlab.model import ModelNotAvailable
        from simlab.runs.interrupt import RunInterrupted, raise_on_signals, signal_name
        from simlab.training.distributed import is_rank_zero

        run = RunDir(cfg.paths.output_dir)
        overrides = job_overrides()
        owner = False  # whether this run owns the folder's status.json (never touch another run's)
        try:
            with raise_on_signals():
                if cfg.resume:
                    prepare_resume(cfg, run)
                if is_rank_zero():
                    check_before_overwrite(cfg, run.path)  # overwrite=true deletes only for a run that can start
                    run.claim(resume=bool(cfg.resume), overwrite=bool(cfg.overwrite),
                              force=bool(cfg.get("resume_force")), overrides=overrides,
                              started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                              resumed_from=cfg.ckpt_path if cfg.resume else None)
                    owner = True
                start(cfg, run)
                result = task(cfg)
        except RunInterrupted as err:
            command = resume_command(overrides, run.path)
            log.warning("%s. Resume with: %s", err, command if err.checkpoint else "(nothing saved)")
            if owner:
                run.write_status("interrupted", overrides, signal=signal_name(err.signum), checkpoint=err.checkpoint,
                                 step=err.step, message=str(err), resume_command=command)
            raise SystemExit(err.exit_code) from None
        except BaseException as err:
            missing = _caused_by(err, ModelNotAvailable)  # instantiate() wraps the loader's error
            if missing is not None and is_multirun():
                log.warning("job skipped: %s", missing)
                if owner:
                    run.write_status("skipped", overrides, reason=str(missing))
                return None
            _log_to_files(f"run failed: {type(err).__name__}: {err}")
            if owner:
                run.write_status("failed", overrides, error=f"{type(err).__name__}: {err}",
                                 traceback=traceback.format_exc())
            user = user_error(err)
            if ONE_LINE_ERRORS and not is_multirun() and user is not None and is_rank_zero():
                # a user error is one line; its traceback is in run.log and status.json (a sweep keeps Hydra's own
                # handling, which records the job as failed and runs the others)
                where = f" (traceback in {run.log_file})" if run.log_file.is_file() else ""
                print(f"{type(user).__name__}: {' '.join(str(user).split())}{where}", file=sys.stderr)
                raise SystemExit(1) from None
            raise
        if owner:
            run.write_status("completed", overrides)
        return result

    return wrapped


def objective(result: dict | None, metric: str | None) -> float | None:
    """What a Hydra sweeper optimises (``optimized_metric``): ``val/<metric>`` is the fine-tune's best validation
    score; ``<subset>/<metric>`` or ``paper_average/<metric>`` a tested score. None when not asked; an error naming
    the keys when the run has no such number (a search must not silently optimise nothing)."""
    if not metric:
        return None
    result = result or {}
    best = result.get("best_valid") or {}
    if best.get("metric") == metric:
        return float(best["value"])
    group, _, name = metric.rpartition("/")
    scores = result.get("paper_average") if group == "paper_average" else (result.get("subsets") or {}).get(group)
    if scores and scores.get(name) is not None:
        return float(scores[name])
    raise KeyError(f"optimized_metric={metric}: the run has no such number (its best validation score is "
                   f"{best.get('metric')!r}; tested subsets: {sorted(result.get('subsets') or {})})")


@task_wrapper
def run_task(cfg: DictConfig) -> dict:
    """The configured task (``cfg.task.run``, a partial function) called on the config, in the wrapper."""
    from hydra.utils import instantiate

    return instantiate(cfg.task.run)(cfg)


def start(cfg: DictConfig, run: RunDir) -> None:
    """What every task starts with: the resolved config in the folder (rank zero, not when resuming: the folder
    keeps the original's), and the seed."""
    import pytorch_lightning as pl

    from simlab.training.distributed import is_rank_zero

    if is_rank_zero() and not cfg.resume:
        run.write_config(OmegaConf.to_yaml(cfg, resolve=True))
    pl.seed_everything(cfg.seed, workers=True)


def resume_command(overrides: list[str], out: Path) -> str:
    kept = [o for o in overrides if o.partition("=")[0].lstrip("+~") not in ("resume", "overwrite")]
    return shlex.join(["python", "run.py", *kept, f"resume={out}"])


def prepare_resume(cfg: DictConfig, run: RunDir) -> None:
    """resume=<run dir>: the same config as the interrupted run (else an error naming what differs), and its
    last checkpoint as ckpt_path."""
    from simlab.runs.status import config_differences

    out = run.path
    if not cfg.task.fit:
        raise RunDirError(f"resume={out}: only fine-tuning resumes; a {cfg.task.name} run is simply run again")
    if not run.config_file.is_file():
        raise RunDirError(f"resume={out}: no {CONFIG_FILE} there, so not a simlab run that can be resumed")
    saved, asked = OmegaConf.to_container(OmegaConf.load(run.config_file), resolve=True), OmegaConf.to_container(
        cfg, resolve=True)
    for config in (saved, asked):  # the task's function and kind (absent from older runs) change no result
        for key in ("run", "calibrates"):
            (config.get("task") or {}).pop(key, None)
    # trainer.precision=auto is resolved on the machine (simlab.training.precision); the checkpoint records what the
    # run trained in and ResumeCheckpoint refuses any other, so naming that precision on resume is no difference
    auto = (saved.get("trainer") or {}).get("precision") == "auto"
    asked_auto = (asked.get("trainer") or {}).get("precision") == "auto"
    if auto:
        for config in (saved, asked):
            (config.get("trainer") or {}).pop("precision", None)
    # optimized_metric: what a sweeper reads from the result, not how the run trains. A copied or moved run folder:
    # its own location (paths.output_dir and every path under it) is no difference
    moved = ((saved.get("paths") or {}).get("output_dir"), (asked.get("paths") or {}).get("output_dir"))
    differences = config_differences(saved, asked,
                                     ignore=("resume", "resume_force", "ckpt_path", "overwrite", "optimized_metric"),
                                     moved=moved if all(isinstance(p, str) and p for p in moved) else None)
    if differences:
        raise RunDirError(
            f"resume={out}: the config differs from the interrupted run's ({'; '.join(differences[:10])}); give the "
            f"same overrides as the original command (its status.json has them)"
        )
    checkpoint = run.last_checkpoint
    if not checkpoint.is_file():
        raise RunDirError(f"resume={out}: no {checkpoint.relative_to(out)} (stopped before its first checkpoint): "
                          f"run it again")
    if cfg.ckpt_path and Path(cfg.ckpt_path).resolve() != checkpoint.resolve():
        raise RunDirError(f"resume={out} resumes from {checkpoint}; drop ckpt_path={cfg.ckpt_path}")
    cfg.ckpt_path = str(checkpoint)
    if auto and asked_auto:  # auto is resolved once per run: measured again on a busy machine it may choose otherwise
        from simlab.training.callbacks import recorded_precision

        chosen = recorded_precision(checkpoint)
        if chosen:
            cfg.trainer.precision = chosen
            log.info("trainer.precision=auto: resuming in %s, the precision the run chose (its checkpoint records it)",
                     chosen)


def user_error(err: BaseException) -> BaseException | None:
    """The user error ``err`` is (:data:`USER_ERRORS`), or the one Hydra's InstantiationException wraps (a config's
    class refused a setting in its constructor, e.g. data.limit_per_subset=0); None for any other error."""
    from hydra.errors import InstantiationException

    if isinstance(err, InstantiationException) and isinstance(err.__cause__, USER_ERRORS):
        return err.__cause__
    return err if isinstance(err, USER_ERRORS) else None


def _caused_by(err: BaseException, kind: type) -> BaseException | None:
    while err is not None:
        if isinstance(err, kind):
            return err
        err = err.__cause__ or err.__context__
    return None


def _log_to_files(message: str) -> None:
    """Write the current exception's traceback into the run's log file(s) only (the console gets Hydra's own)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, sys.exc_info())
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
