"""SIGINT and SIGTERM as an interruption, not a failure.

Ctrl-C, ``timeout``, ``docker stop`` and SLURM pre-emption all send one of them. Outside training a run stops at
once (:func:`raise_on_signals`); during training :class:`simlab.training.callbacks.ResumeCheckpoint` defers the stop to
the end of the current optimizer step and saves a checkpoint first. Either way the run ends with
:class:`RunInterrupted`, which run.py records as status ``interrupted`` with the checkpoint to resume from.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(Exception):
    """The run was stopped by a signal. ``checkpoint`` is the file to resume from (None: nothing to resume)."""

    def __init__(self, signum: int, checkpoint: str | None = None, step: int | None = None, detail: str = ""):
        self.signum, self.checkpoint, self.step = signum, checkpoint, step
        where = f" at step {step}" if step is not None else ""
        saved = f"; checkpoint {checkpoint}" if checkpoint else "; no checkpoint"
        super().__init__(f"interrupted by {signal_name(signum)}{where}{saved}{(': ' + detail) if detail else ''}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number (130 SIGINT, 143 SIGTERM)."""
        return 128 + int(self.signum)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


@contextlib.contextmanager
def handle_signals(handler) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``handler(signum, frame)`` inside the block, then restore the previous
    handlers. Outside the main thread (where Python cannot set handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)


def _raise(signum, frame):
    raise RunInterrupted(signum)


def raise_on_signals():
    """Inside the block SIGINT/SIGTERM raise :class:`RunInterrupted` at once (loading, testing, baselines)."""
    return handle_signals(_raise)
