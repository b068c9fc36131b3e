"""``python run.py task=simulate``: check the inputs, simulate with the configured model, write the outputs."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from simlab.data.population_prompts import as_wording
from simlab.simulate.countries import check_countries, wvs_countries
from simlab.simulate.observed import read_observed
from simlab.simulate.outputs import write_simulation
from simlab.simulate.populations import resolve_populations
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
    by_population = {k: sim_cfg.get(k) for k in ("populations", "groups", "group_values")}
    populations = None
    if by_population["populations"] is not None or by_population["groups"] is not None:  # checked before loading
        wording = as_wording((cfg.get("data") or {}).get("population_wording"))  # the adapter's is checked later
        countries = sim_cfg.get("countries")
        populations = resolve_populations(countries, by_population["populations"], by_population["groups"], known,
                                          wording, by_population["group_values"], prefix="simulate.")
    else:
        countries = (check_countries(sim_cfg["countries"], known, "simulate.countries") if sim_cfg.get("countries")
                     else known)
    observed = read_observed(sim_cfg["observed"], questions, known) if sim_cfg.get("observed") else []
    subgroups = [row.population_key for row in observed if row.attributes]
    if populations is None and subgroups:
        raise ValueError(f"simulate.observed: {sim_cfg['observed']} has subgroup cells ({subgroups[0]}...) but no "
                         "subgroup is simulated: set simulate.groups or simulate.populations, or leave them out")
    simulator = Simulator.from_config(cfg, known_countries=known, observed=observed)
    frame = simulator.predict_questions(questions, countries, where="simulate.countries", **by_population)
    frame.attrs["input"] = str(Path(sim_cfg["input"]).resolve())
    if observed:
        frame.attrs["observed"] = observed_record(sim_cfg["observed"], observed, frame)
        log.info("observed cells from %s: %d of %d shown as observed (source=observed)",
                 sim_cfg["observed"], frame.attrs["observed"]["cells_shown"], len(observed))
    paths = write_simulation(frame, out_dir)
    intervals = frame.attrs["intervals"]  # the adapter's prediction intervals (simlab.simulate.trust), or why none
    if "note" in intervals:
        log.info("no prediction intervals: %s", intervals["note"])
    else:
        log.info("%g%% prediction intervals on every simulated share, from %s", 100 * intervals["level"],
                 intervals["from"])
    if populations is not None:
        countries = frame.attrs["countries"]
        for cell in (frame.attrs.get("observed_populations") or {}).get("not_used", []):
            log.warning("simulate.observed: %s is a subgroup that is not simulated: neither shown nor used", cell)
    log.info("simulated %d questions x %d %s with %s (adapter %s); outputs in %s", len(questions),
             len(populations or countries), "countries" if populations is None else "populations",
             simulator.provenance["model"], simulator.provenance["adapter"], out_dir)
    log.warning(CAUTION)
    summary = {"task": "simulate", **{k: frame.attrs[k] for k in ("model", "model_source", "adapter", "prompt_style")},
               "questions": len(questions), "countries": countries}
    if populations is not None:
        summary["populations"] = [p.key for p in populations]
    return {**summary, "outputs": [str(p) for p in paths], "caution": CAUTION,
            **({"observed": frame.attrs["observed"]} if observed else {})}


def observed_record(path: str | Path, observed: Sequence, frame) -> dict:
    """What simulation.meta.json says about ``simulate.observed``: the file, its countries, questions and cells,
    and how many cells of the outputs (a country's, or a population's) show surveyed shares instead of simulated
    ones. A simulation by population says more in ``observed_populations``."""
    cell = ["question_id", "population" if "population" in frame.columns else "country"]
    shown = frame[frame["source"] == "observed"][cell].drop_duplicates()
    return {"file": str(Path(path).resolve()), "countries": sorted({row.country for row in observed}),
            "questions": len({row.question_id for row in observed}), "cells": len(observed),
            "cells_shown": len(shown),
            "use": "a simulated country (or population) that was observed shows its observed shares "
                   "(source=observed in simulation.csv), not the model's; an observed whole country is also the "
                   "prior of the other countries when the simulator's prior is built from the observed cells"}
