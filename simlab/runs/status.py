"""A run folder's life: one run owns it (the claim), and status.json says how it ended.

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
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from simlab.common.files import write_json
from simlab.runs.names import RUN_OUTPUT_PATTERNS, RUN_OUTPUTS, STATUS_FILE, STATUSES


class RunDirError(RuntimeError):
    """A run folder that this run may not use as asked (holds another run, or cannot be resumed)."""



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


def safe_dirname(name: str, limit: int = 150) -> str:
    """A sweep job's folder name from its overrides, as one path component: a path separator or a character outside
    letters, digits and ``._=,+-`` becomes ``_`` (so ``+note=a/../../X`` cannot put a job outside its sweep folder,
    and ``ckpt_path=ck/a.ckpt`` does not nest folders); a long name is cut and ends with a hash of the whole."""
    import hashlib
    import re

    safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", name).replace("..", "__").lstrip(".-") or "_"
    if len(safe) > limit:
        safe = f"{safe[: limit - 9]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return safe


def leftover_outputs(out: str | Path) -> list[str]:
    """The run outputs already in ``out`` (another run's, or this run's before it was interrupted)."""
    out = Path(out)
    found = [name for name in RUN_OUTPUTS if (out / name).exists()]
    return found + sorted(p.name for pattern in RUN_OUTPUT_PATTERNS for p in out.glob(pattern))


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` itself (flock on the directory: no file is left behind), so that checking a
    folder and writing its ``running`` status is one step: two runs claiming one folder at once cannot both win.
    Where flock does not exist (Windows) the claim is unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def refusal(out: str | Path, *, resume: bool = False, overwrite: bool = False, force: bool = False) -> str | None:
    """Why this run may not use ``out`` (None: it may), read-only: checked before Hydra writes anything there and
    again, under the folder lock, by :func:`claim`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        return f"{out} is a file, not a run folder"
    if resume and not out.is_dir():
        return f"resume={out}: no such run folder"
    previous = read_status(out) if out.is_dir() else None
    if previous is not None and previous["status"] == "running" and not previous.get("dead"):
        elsewhere = previous.get("host") != socket.gethostname()
        if not (resume and force and elsewhere):
            hint = (f"; if that host is gone, resume with resume={out} resume_force=true" if elsewhere and resume
                    else "; wait for it or stop it first")
            return (f"{out} belongs to a run that is still running (pid {previous.get('pid')} on "
                    f"{previous.get('host')}, started {previous.get('started', previous.get('time'))}){hint}")
    if resume:
        if previous is None:
            return f"resume={out}: no status.json there, so no simlab run to resume"
        if previous["status"] in ("completed", "skipped"):
            return f"resume={out}: that run is already {previous['status']}; nothing to resume"
        return None
    leftovers = leftover_outputs(out) if out.is_dir() else []
    if leftovers and not overwrite:
        state = previous["status"] if previous else "no status"
        return (f"{out} already holds another run's outputs ({state}: {', '.join(leftovers)}). Use a new folder "
                f"(the default hydra.run.dir is always new), resume that run with resume={out}, or pass "
                f"overwrite=true to delete its outputs first")
    return None


def claim(out: str | Path, *, resume: bool = False, overwrite: bool = False, force: bool = False,
          overrides: list[str] | None = None, **running: object) -> dict | None:
    """Make ``out`` this run's folder; returns the previous status record (or None).

    A folder that holds another run's outputs is refused, unless this run resumes it (the previous run must
    have stopped: interrupted, failed, or dead; ``force`` also takes one still marked ``running`` on another host,
    which cannot be asked whether it is alive) or ``overwrite`` is set (its outputs are removed first, so nothing of
    the old run is left beside the new one). A folder whose run is alive on this host is always refused. With
    ``overrides``, status.json ``running`` (with ``running`` as extra fields) is written under the same lock.
    """
    out = Path(out)
    if resume and not out.is_dir():
        raise RunDirError(refusal(out, resume=True))
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        reason = refusal(out, resume=resume, overwrite=overwrite, force=force)
        if reason:
            raise RunDirError(reason)
        previous = read_status(out)
        if not resume:
            for name in leftover_outputs(out):
                target = out / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
        if overrides is not None:
            write_status(out, "running", overrides, **running)
    return previous


def config_differences(old: dict, new: dict, ignore: tuple[str, ...] = (), moved: tuple[str, str] | None = None
                       ) -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs (``ignore``: top-level keys to skip).
    ``moved=(old folder, new folder)``: a run folder that was copied or moved; a value in ``old`` that is the old
    folder or lies under it is compared as the same path under the new folder (its own location is no difference)."""
    if moved is not None:
        old = relocate(old, *moved)
    flat_old, flat_new = _flatten(old), _flatten(new)
    keys = sorted((set(flat_old) | set(flat_new))
                  - {k for k in set(flat_old) | set(flat_new) if k.split(".")[0] in ignore})
    missing = object()
    return [f"{k}: {flat_old.get(k, '<absent>')!r} -> {flat_new.get(k, '<absent>')!r}"
            for k in keys if flat_old.get(k, missing) != flat_new.get(k, missing)]


def relocate(node, old: str, new: str):
    """``node`` (plain containers) with every string that is ``old`` or starts with ``old/`` moved under ``new``."""
    old, new = old.rstrip("/"), new.rstrip("/")
    if isinstance(node, dict):
        return {key: relocate(value, old, new) for key, value in node.items()}
    if isinstance(node, list):
        return [relocate(value, old, new) for value in node]
    if isinstance(node, str) and old and (node == old or node.startswith(old + "/")):
        return new + node[len(old):]
    return node


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        flat: dict = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


def sqlite_storage(path: str) -> str:
    """``sqlite:///<path>`` with the folder made first: an Optuna study under a sweep folder that Hydra has not
    created yet (the sweeper opens its storage before the first job runs)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"
