"""``python run.py task=simulate``: check the inputs, simulate with the configured model, write the outputs."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from simlab.simulate.countries import check_countries, wvs_countries
from simlab.simulate.observed import read_observed
from simlab.simulate.outputs import write_simulation
from simlab.simulate.questions import read_questions
from simlab.simulate.simulator import CAUTION, Simulator

log = logging.getLogger(__name__)

def simulate_task(cfg: Mapping[str, Any], out_dir: str | Path) -> dict:
    """``python run.py task=simulate``: read the questions, check the countries, simulate, write the outputs.

    ``cfg`` is the resolved config as plain containers. Inputs are checked before the model is loaded.
    """
    sim_cfg = cfg.get("simulate") or {}
    if not sim_cfg.get("input"):
        raise ValueError("task=simulate needs simulate.input=FILE (YAML, JSON or CSV questions)")
    questions = read_questions(sim_cfg["input"])
    known = wvs_countries((cfg.get("data") or {}).get("root"))
    if sim_cfg.get("countries") is not None and not sim_cfg["countries"]:
        raise ValueError("simulate.countries=[] names no country: list some, or leave it null for every WVS country")
    countries = (check_countries(sim_cfg["countries"], known, "simulate.countries") if sim_cfg.get("countries")
                 else known)
    observed = read_observed(sim_cfg["observed"], questions, known) if sim_cfg.get("observed") else []
    simulator = Simulator.from_config(cfg, known_countries=known, observed=observed)
    frame = simulator.predict_questions(questions, countries, where="simulate.countries")
    frame.attrs["input"] = str(Path(sim_cfg["input"]).resolve())
    if observed:
        frame.attrs["observed"] = observed_record(sim_cfg["observed"], observed, frame)
        log.info("observed cells from %s: %d shown as observed (source=observed), all %d in the prior of the others",
                 sim_cfg["observed"], frame.attrs["observed"]["cells_shown"], len(observed))
    paths = write_simulation(frame, out_dir)
    log.info("simulated %d questions x %d countries with %s (adapter %s); outputs in %s",
             len(questions), len(countries), simulator.provenance["model"], simulator.provenance["adapter"], out_dir)
    log.warning(CAUTION)
    return {"task": "simulate", **{k: frame.attrs[k] for k in ("model", "model_source", "adapter", "prompt_style")},
            "questions": len(questions), "countries": countries, "outputs": [str(p) for p in paths], "caution": CAUTION,
            **({"observed": frame.attrs["observed"]} if observed else {})}


def observed_record(path: str | Path, observed: Sequence, frame) -> dict:
    """What simulation.meta.json says about ``simulate.observed``: the file, its countries, questions and cells,
    and how many cells of the outputs show surveyed shares instead of simulated ones."""
    shown = frame[frame["source"] == "observed"][["question_id", "country"]].drop_duplicates()
    return {"file": str(Path(path).resolve()), "countries": sorted({row.country for row in observed}),
            "questions": len({row.question_id for row in observed}), "cells": len(observed),
            "cells_shown": len(shown),
            "use": "the prior of every other country; a simulated country that was observed shows its observed "
                   "shares (source=observed in simulation.csv), not the model's"}
