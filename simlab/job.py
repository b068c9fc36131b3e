"""A sweep job's fate (completed, failed or skipped, and why) in status.json, so reports can show every job,
including the ones that wrote no metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path

STATUS_FILE = "status.json"
STATUSES = ("completed", "failed", "skipped")


def write_status(out: str | Path, status: str, overrides: list[str], **info) -> Path:
    """Write ``<out>/status.json``; ``info`` carries the reason (skipped) or the error and traceback (failed)."""
    if status not in STATUSES:
        raise ValueError(f"job status must be one of {STATUSES}, got {status!r}")
    path = Path(out) / STATUS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"status": status, "overrides": list(overrides), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_status(job_dir: str | Path) -> dict | None:
    """The job's status.json, or None when the job never got as far as writing one (e.g. killed)."""
    path = Path(job_dir) / STATUS_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("status") not in STATUSES:
        raise ValueError(f"{path}: field 'status' must be one of {STATUSES}, got {record.get('status')!r}")
    return record
