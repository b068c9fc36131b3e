"""What both sections of ``make faults`` share: the smoke-size settings, a run of run.py in a fresh process, and the
table of outcomes (fault, expected, observed, pass/fail)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

from simlab.paths import REPO_ROOT

# The embedded model at a size that shows every fault in minutes: 6 optimizer steps of 4 rows, validation at
# steps 3 and 6, a checkpoint after every step, one tested subset.
SMOKE = ["experiment=smoke", "logger=none", "data.limit_per_subset=24", "data.batch_size=4",
         "trainer.limit_train_batches=6", "data.test_subsets=[C1-Q2]", "callbacks.resume_checkpoint.every_n_steps=1"]


@dataclass
class Outcome:
    """One row of the table: the fault, what should happen, what did, and whether that is what should."""

    fault: str
    expected: str
    observed: str
    passed: bool


def run_py(args: list[str], wait: bool = True, env: dict | None = None, timeout: float = 1800):
    """``python run.py <args>`` in the repository (stdout and stderr together in ``.output`` when ``wait``)."""
    command = [sys.executable, str(REPO_ROOT / "run.py"), *args]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {})})
    if wait:
        process.output, _ = process.communicate(timeout=timeout)
    return process


def markdown(outcomes: list[Outcome]) -> str:
    lines = ["| fault | expected | observed | result |", "|---|---|---|---|"]
    for o in outcomes:
        lines.append(f"| {o.fault} | {o.expected} | {o.observed.replace('|', '/')} | "
                     f"{'pass' if o.passed else 'FAIL'} |")
    return "\n".join(lines)
