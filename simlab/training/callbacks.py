"""Checkpoints that make a fine-tune resumable exactly, and a stop on SIGINT/SIGTERM that leaves one behind.

Resuming is exact when the checkpoint holds everything the next step depends on: the trainable weights and
optimizer state (Lightning), the position in the epoch's batch list (:meth:`SurveyDataModule.state_dict`), and
the random number generators that draw LoRA dropout (:class:`ResumeCheckpoint`'s state). Checkpoints are
written to a temporary file and renamed, so a run killed while saving never leaves a truncated file.

Lightning restarts a checkpoint saved at the end of a training batch *after* the validation due at that batch
(it fast-forwards over it), so resume checkpoints are never saved at a batch that validation follows: there the
checkpoint is saved at the end of the validation instead.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import torch
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint

from simlab.runs.interrupt import RunInterrupted, handle_signals, signal_name
from simlab.runs.names import LAST_CHECKPOINT

log = logging.getLogger(__name__)


def save_checkpoint_atomically(trainer, path: str | Path) -> str:
    """``trainer.save_checkpoint`` into a temporary file, then rename it over ``path`` (rank zero renames)."""
    path = str(path)
    tmp = path + ".tmp"
    trainer.save_checkpoint(tmp)
    if trainer.is_global_zero:
        os.replace(tmp, path)
    trainer.strategy.barrier("simlab.save_checkpoint")
    return path


def recorded_precision(checkpoint: str | Path) -> str | None:
    """The precision a run trained in, as its :class:`ResumeCheckpoint` recorded it in ``checkpoint``; None when not
    recorded (an older checkpoint) or not a readable checkpoint (restoring it reports why, in one line)."""
    try:
        # mmap: only the callbacks' few bytes are read, not the weights and optimizer state Lightning restores next
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - the resume's own restore reads the file again and names what is wrong
        return None
    callbacks = state.get("callbacks") if isinstance(state, dict) else None
    for key, value in (callbacks or {}).items():
        if str(key).startswith(ResumeCheckpoint.__qualname__) and isinstance(value, dict):
            return value.get("precision") or None
    return None


class AtomicModelCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (the best adapter by a validation metric), written atomically."""

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        tmp = filepath + ".tmp"
        super()._save_checkpoint(trainer, tmp)
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
        trainer.strategy.barrier("simlab.model_checkpoint")
        self._last_checkpoint_saved = filepath

    def load_state_dict(self, state_dict: dict) -> None:
        """A run folder copied or moved since the checkpoint was saved (``resume=<new place>``): its best checkpoint
        is the same file under the new folder, so the best score and paths move along. (Lightning would drop the
        score on a changed dirpath, and the next validation would replace the best checkpoint whatever its
        score.) A checkpoint from another folder (``ckpt_path=``), whose best file is not here, is left as it is."""
        from simlab.runs.status import relocate

        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new:
            moved = relocate(dict(state_dict), old, new)
            moved["best_k_models"] = {relocate(path, old, new): score
                                      for path, score in (state_dict.get("best_k_models") or {}).items()}
            best = moved.get("best_model_path")
            if best != state_dict.get("best_model_path") and os.path.isfile(best):
                log.info("checkpoints moved from %s to %s: the best checkpoint's score and path kept", old, new)
                state_dict = moved
        super().load_state_dict(state_dict)


def rng_states() -> dict:
    """The generators training draws from (LoRA dropout: torch's), as tensors and ints (weights_only-loadable)."""
    states = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumeCheckpoint(Checkpoint):
    """Owns ``<dirpath>/last.ckpt``: the checkpoint a fine-tune resumes from.

    Saved every ``every_n_steps`` optimizer steps, at the end of each validation during fitting, and at the end
    of training. While training, SIGINT/SIGTERM do not kill the run: the current optimizer step finishes (and the
    validation, if one is due after it), ``last.ckpt`` is saved and :class:`~simlab.runs.interrupt.RunInterrupted` is
    raised; a second signal stops at once (progress after the last checkpoint is lost).

    Args:
        dirpath: the run's checkpoint folder.
        every_n_steps: optimizer steps between periodic saves (None or 0: only at validation and the end).
        filename: the checkpoint's file name.
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int | None = 10, filename: str = LAST_CHECKPOINT):
        if every_n_steps is not None and (not isinstance(every_n_steps, int) or every_n_steps < 0):
            raise ValueError(f"every_n_steps must be a non-negative integer or null, got {every_n_steps!r}")
        self.dirpath, self.filename, self.every_n_steps = Path(dirpath), filename, every_n_steps or 0
        self.requested: int | None = None  # the signal that asked to stop
        self.resumed: dict | None = None  # where this run resumed from (checkpoint, step, epoch)
        self._signals = None
        self._last_step = 0
        self._precision: str | None = None  # the trainer's, carried by the checkpoint (a resume must keep it)

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    # ------------------------------------------------------------------ state carried by every checkpoint
    def setup(self, trainer, pl_module, stage: str) -> None:
        self._precision = str(trainer.precision)  # before Lightning restores a checkpoint into the callbacks

    def state_dict(self) -> dict:
        return {"rng": rng_states(), "precision": self._precision}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict.get("precision")
        if saved and self._precision and saved != self._precision:
            # precision=auto measures the CPU (simlab.training.precision): another machine may choose otherwise
            raise ValueError(f"{self.path}: the run trained in precision {saved}, this resume would continue in "
                             f"{self._precision}; add trainer.precision={saved} to resume it exactly")
        if "rng" in state_dict:
            set_rng_states(state_dict["rng"])

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum, frame) -> None:
        if self.requested is not None:
            checkpoint = str(self.path) if self.path.is_file() else None
            raise RunInterrupted(signum, checkpoint,
                                 detail="second signal: stopped at once; steps after the checkpoint are lost")
        self.requested = signum
        log.warning("received %s: stopping after this training step (a checkpoint is saved first); send it again to "
                    "stop at once", signal_name(signum))

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_step = trainer.global_step
        if trainer.ckpt_path:
            self.resumed = {"checkpoint": str(trainer.ckpt_path), "global_step": trainer.global_step,
                            "epoch": trainer.current_epoch,
                            "batches_done_in_epoch": trainer.fit_loop.epoch_loop.batch_progress.current.completed}
            log.info("resumed from %s at step %d (epoch %d, %d batches of it done)", trainer.ckpt_path,
                     trainer.global_step, trainer.current_epoch, self.resumed["batches_done_in_epoch"])
        self._signals = handle_signals(self._on_signal)
        self._signals.__enter__()

    def _release_signals(self) -> None:
        if self._signals is not None:
            signals, self._signals = self._signals, None
            signals.__exit__(None, None, None)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer)
        self._release_signals()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._release_signals()

    def teardown(self, trainer, pl_module, stage) -> None:
        self._release_signals()

    # ------------------------------------------------------------------ saving and stopping
    def _save(self, trainer) -> None:
        save_checkpoint_atomically(trainer, self.path)

    def _stop_requested(self, trainer) -> bool:
        requested = self.requested is not None
        if trainer.world_size > 1:  # every rank stops at the same step
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        return requested

    def _stop(self, trainer) -> None:
        self._release_signals()
        raise RunInterrupted(self.requested or 15, str(self.path), step=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stepped = trainer.global_step > self._last_step  # an optimizer step ended here (not mid-accumulation)
        self._last_step = trainer.global_step
        stop = self._stop_requested(trainer)
        if not stepped or _validation_follows(trainer):
            return  # the validation end saves (and stops) instead
        if stop:
            self._save(trainer)
            self._stop(trainer)
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.state.fn == "fit":
            return
        self._save(trainer)
        if self._stop_requested(trainer):
            self._stop(trainer)


def _validation_follows(trainer) -> bool:
    """Whether Lightning validates right after the current training batch."""
    loop = trainer.fit_loop.epoch_loop
    try:
        return bool(loop._should_check_val_fx(trainer.fit_loop._data_fetcher))
    except AttributeError:  # another Lightning version: the batch-interval rule
        last = loop.batch_progress.is_last_batch
        return bool(trainer.enable_validation and (last or (loop.batch_idx + 1) % trainer.val_check_batch == 0))
