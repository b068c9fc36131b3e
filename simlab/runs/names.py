"""The names of a run folder's files, here and nowhere else (:class:`simlab.runs.rundir.RunDir` reads and writes
them). A new run output must be listed in RUN_OUTPUTS, or ``overwrite=true`` leaves it behind."""

from __future__ import annotations

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
FIGURES_DIR = "figures"  # the run's figures for its W&B run (simlab.report.wandb_logging)
RUN_OUTPUTS = (
    STATUS_FILE, CONFIG_FILE, METRICS_FILE, PREDICTIONS_FILE, RESULTS_FILE, "invalid_rows.jsonl",
    ADAPTER_DIR, CHECKPOINT_DIR, "wandb", "csv", FIGURES_DIR,
    "simulation.csv", "simulation.meta.json", "simulation.md",
)
RUN_OUTPUT_PATTERNS = ("simulation_*.png",)
