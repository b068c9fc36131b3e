"""Hydra callbacks: what must happen before Hydra itself writes into a run folder."""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class RefuseTakenFolder(Callback):
    """Refuse a single run's folder before Hydra writes its ``.hydra/`` files and ``run.log`` there: a run that the
    wrapper would refuse (the folder holds another run, a live run, or ``resume=`` names no run) must leave that
    folder as it was (exit 1, the reason on stderr). The wrapper's claim checks again under the folder lock (two
    runs racing for one folder). With ``overwrite=true`` the new run's inputs are checked first
    (:func:`simlab.tasks.inputs.check_before_overwrite`): a run that could not start deletes and rewrites nothing."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from simlab.runs.status import RunDirError, refusal
        from simlab.tasks.inputs import check_before_overwrite
        from simlab.training.distributed import is_rank_zero

        if not is_rank_zero():  # a spawned rank joins its rank zero's folder
            return
        out = config.hydra.run.dir
        reason = refusal(out, resume=bool(config.get("resume")), overwrite=bool(config.get("overwrite")),
                         force=bool(config.get("resume_force")))
        if reason:  # Hydra turns a callback's Exception into a warning and goes on: stop here instead
            print(f"{RunDirError.__name__}: {reason}", file=sys.stderr)
            raise SystemExit(1)
        try:  # overwrite=true: the old run stays whole (Hydra's files too) unless the new run's inputs are there
            check_before_overwrite(config, out)
        except (FileNotFoundError, NotADirectoryError, PermissionError, ValueError) as err:
            print(f"{type(err).__name__}: {err}", file=sys.stderr)
            raise SystemExit(1) from None
