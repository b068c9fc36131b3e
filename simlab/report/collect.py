"""Find every job under the given run or sweep folders and read what it left: status, overrides, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from simlab.runs.rundir import RunDir
from simlab.runs.status import read_status

# overrides that name paths, sweep plumbing or loggers: never what distinguishes a table row. The same list names
# a sweep's job folders: conf/hydra/default.yaml's hydra.job.config.override_dirname.exclude_keys (a test checks).
IGNORED_KEYS = {"experiment", "adapter", "model.adapter", "model.path", "data.root", "hydra.run.dir", "hydra.sweep.dir",
                "resume", "overwrite", "logger"}


@dataclass
class Job:
    """One run folder. ``status`` is completed, failed, skipped, interrupted, running, dead (a running record
    whose process is gone), incomplete (no status.json), broken (completed, but the outputs disagree) or
    unreadable (its status.json or metrics.json cannot be parsed: the report names the file and goes on);
    ``metrics`` is its metrics.json (None when it wrote none). Only a completed job is reported."""

    path: Path
    status: str
    overrides: dict[str, str]
    metrics: dict | None
    reason: str = ""
    label: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "completed" and self.metrics is not None

    def predictions(self) -> list[dict]:
        return RunDir(self.path).read_predictions()


def _is_job_dir(path: Path) -> bool:
    return RunDir(path).is_run()


def _overrides_of(path: Path, status: dict | None, metrics: dict | None) -> list[str]:
    if status and "overrides" in status:
        return list(status["overrides"])
    if metrics and "overrides" in metrics:
        return list(metrics["overrides"])
    hydra_file = path / ".hydra" / "overrides.yaml"
    if hydra_file.is_file():
        import yaml

        return list(yaml.safe_load(hydra_file.read_text(encoding="utf-8")) or [])
    return []


def _parse_overrides(items: list[str]) -> dict[str, str]:
    parsed = {}
    for item in items:
        key, _, value = item.partition("=")
        parsed[key.lstrip("+~")] = value
    return parsed


def load_job(path: str | Path) -> Job:
    """Read a run folder, trusting it only when status.json says completed and its outputs agree: metrics.json
    is there and predictions.jsonl has exactly one line per tested row (the sum of the subsets' n)."""
    path = Path(path)
    run = RunDir(path)
    try:
        status = read_status(path)
        metrics = run.read_metrics() if run.metrics_file.is_file() else None
    except (ValueError, UnicodeDecodeError) as err:  # a truncated or hand-edited file: name it, report the rest
        return Job(path, "unreadable", {}, None, " ".join(str(err).split()))
    if status is None:
        state, reason = "incomplete", "no status.json (killed before it started, or not a simlab run)"
    else:
        state = "dead" if status.get("dead") else status["status"]
        reason = status.get("reason") or status.get("error") or status.get("message") or ""
    if state == "completed":
        state, reason = _check_outputs(path, metrics)
    return Job(path, state, _parse_overrides(_overrides_of(path, status, metrics)), metrics, reason)


def _check_outputs(path: Path, metrics: dict | None) -> tuple[str, str]:
    if metrics is None:
        return "broken", "status completed but no metrics.json"
    if "subsets" not in metrics:  # a simulation: no per-row predictions to count
        return "completed", ""
    expected = sum(int(v.get("n", 0)) for v in metrics["subsets"].values())
    run = RunDir(path)
    if not run.predictions_file.is_file():
        return "broken", "status completed but no predictions.jsonl"
    lines = run.count_predictions()
    if lines != expected:
        return "broken", f"predictions.jsonl has {lines} lines, metrics.json counts {expected} rows"
    return "completed", ""


def collect_jobs(paths: list[str | Path], names: list[str] | None = None) -> list[Job]:
    """Every job folder at or directly under each path (a run dir, or a sweep dir of job subfolders), labelled
    by the overrides that differ between the jobs (or by ``names``, one per job found)."""
    jobs: list[Job] = []
    for root in map(Path, paths):
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: not a directory (give run or sweep folders)")
        found = [root] if _is_job_dir(root) else sorted(
            (p for p in root.iterdir() if p.is_dir() and _is_job_dir(p)), key=_job_sort_key
        )
        if not found:
            raise FileNotFoundError(f"{root}: no run folders (none has status.json, metrics.json or .hydra/)")
        jobs.extend(load_job(p) for p in found)
    if names:
        if len(names) != len(jobs):
            raise ValueError(f"{len(names)} names for {len(jobs)} jobs ({[str(j.path) for j in jobs]})")
        for job, name in zip(jobs, names):
            job.label = name
    else:
        _label(jobs)
    return jobs


def _job_sort_key(path: Path):
    head = path.name.split("_", 1)[0]
    return (0, int(head), path.name) if head.isdigit() else (1, 0, path.name)


def _label(jobs: list[Job]) -> None:
    keys = sorted({k for j in jobs for k in j.overrides} - IGNORED_KEYS)
    varying = [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]
    for job in jobs:
        parts = [f"{k}={job.overrides[k]}" for k in varying if k in job.overrides]
        job.label = ", ".join(parts) or job.path.name
