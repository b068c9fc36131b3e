"""``python run.py task=simulate``: check the inputs, simulate with the configured model, write the outputs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simlab.runs.rundir import RunDir
from simlab.simulate.countries import check_countries, wvs_countries
from simlab.simulate.observed import read_observed
from simlab.simulate.outputs import write_simulation
from simlab.simulate.questions import read_questions
from simlab.simulate.simulator import CAUTION, Simulator

log = logging.getLogger(__name__)

PROMPT_KEYS = ("prompt_order", "prompt_style")


def check_prompt_matches_adapter(cfg: Mapping[str, Any]) -> None:
    """An adapter answers the prompt it was trained on: when ``model.adapter`` is a simlab run's ``adapter/``
    (its run folder holds config_resolved.yaml), a different prompt order or style is an error naming the
    overrides that match it, not a silently worse simulation."""
    import yaml

    adapter = (cfg.get("model") or {}).get("adapter")
    trained = RunDir(Path(adapter).parent).config_file if adapter else None
    if trained is None or not trained.is_file():
        return
    saved = (yaml.safe_load(trained.read_text(encoding="utf-8")) or {}).get("data") or {}
    asked = cfg.get("data") or {}
    differ = [k for k in PROMPT_KEYS if k in saved and saved[k] != asked.get(k)]
    if differ:
        fix = " ".join(f"model.{k}={saved[k]}" for k in differ)
        raise ValueError(f"{adapter} was trained on {', '.join(f'{k}={saved[k]}' for k in differ)} prompts "
                         f"({trained}), this run asks {', '.join(f'{k}={asked.get(k)}' for k in differ)}: add {fix}")


def simulate_task(cfg: Mapping[str, Any], out_dir: str | Path) -> dict:
    """``python run.py task=simulate``: read the questions, check the countries, simulate, write the outputs.

    ``cfg`` is the resolved config as plain containers. Inputs are checked before the model is loaded.
    """
    sim_cfg = cfg.get("simulate") or {}
    if not sim_cfg.get("input"):
        raise ValueError("task=simulate needs simulate.input=FILE (YAML, JSON or CSV questions)")
    questions = read_questions(sim_cfg["input"])
    known = wvs_countries((cfg.get("data") or {}).get("root"))
    countries = (check_countries(sim_cfg["countries"], known, "simulate.countries") if sim_cfg.get("countries")
                 else known)
    observed = read_observed(sim_cfg["observed"], questions, known) if sim_cfg.get("observed") else []
    check_prompt_matches_adapter(cfg)
    simulator = Simulator.from_config(cfg, known_countries=known, observed=observed)
    frame = simulator.predict_questions(questions, countries, where="simulate.countries")
    frame.attrs["input"] = str(Path(sim_cfg["input"]).resolve())
    paths = write_simulation(frame, out_dir)
    log.info("simulated %d questions x %d countries with %s (adapter %s); outputs in %s",
             len(questions), len(countries), simulator.provenance["model"], simulator.provenance["adapter"], out_dir)
    log.warning(CAUTION)
    return {"task": "simulate", **{k: frame.attrs[k] for k in ("model", "model_source", "adapter", "prompt_style")},
            "questions": len(questions), "countries": countries, "outputs": [str(p) for p in paths], "caution": CAUTION}
