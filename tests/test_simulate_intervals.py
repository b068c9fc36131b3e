"""Simulate shows how far to trust it (issue 23): the adapter's prediction intervals on every simulated share and the
effective respondents of the closest evaluated subset, in Simulator.predict, task=simulate's CSV, markdown, chart and
sidecar, for countries and populations; and a simulation without intervals is written exactly as before."""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config

from simlab.simulate.trust import NO_INTERVALS, closest_subsets, respondents_record, share_cell, training_group
from simlab.simulator.bundle import save_calibration
from simlab.simulator.intervals import ConformalIntervals

TEMPERATURE = 1.5
INTERVALS = ConformalIntervals(0.9, "binomial", 0.05, 0.6, "C1-Q2", 35, 240)
RESPONDENTS = {"C1-Q2": {"k": 500, "bound": None}, "C1-Q3": {"k": 120, "bound": None},
               "C2-Q3": {"k": 40, "bound": None}, "C3-Q3": {"k": 61, "bound": None}}
# Japan is a training (C1) country, Kenya is in C2, Colombia in C3, Nigeria in both C2 and C3
COUNTRIES = ["Japan", "Kenya", "Nigeria", "Colombia"]
COLUMNS = ["question_id", "country", "letter", "option", "share", "lower", "upper", "source"]
OPTIONS = ["Agree", "Disagree", "Don't know"]


def lora(folder, llama_dir):
    """A random (non-zero) LoRA adapter saved in ``folder``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(llama_dir), config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def trusted(tmp_path_factory, tiny_llama_dir):
    """A run folder as a calibrated fine-tune leaves it: ``adapter/`` with calibration.json (temperature and
    intervals, written by the library's save function) and the run's metrics.json with effective respondents."""
    run = tmp_path_factory.mktemp("run")
    adapter = lora(run / "adapter", tiny_llama_dir)
    save_calibration(adapter, TEMPERATURE, "C1-Q2", 240, intervals=INTERVALS.to_dict())
    (run / "metrics.json").write_text(json.dumps({"effective_respondents": RESPONDENTS}), encoding="utf-8")
    return adapter


@pytest.fixture(scope="module")
def plain(tmp_path_factory, tiny_llama_dir):
    """An adapter saved without intervals (no calibration.json), its run's metrics.json with effective respondents."""
    run = tmp_path_factory.mktemp("plain_run")
    (run / "metrics.json").write_text(json.dumps({"effective_respondents": RESPONDENTS}), encoding="utf-8")
    return lora(run / "adapter", tiny_llama_dir)


def simulator(llama_dir, adapter, data_root, **kwargs):
    from simlab.simulate import Simulator

    return Simulator({"path": str(llama_dir)}, adapter=adapter, data_root=data_root, device="cpu", **kwargs)


@pytest.fixture(scope="module")
def predicted(trusted, tiny_llama_dir, shared_data):
    sim = simulator(tiny_llama_dir, trusted, shared_data, temperature=TEMPERATURE)
    return sim.predict("Should cities ban cars?", OPTIONS, COUNTRIES, id="cars")


def test_predict_returns_the_saved_intervals_bounds_per_share(predicted, trusted):
    assert list(predicted.columns) == COLUMNS and set(predicted["source"]) == {"simulated"}
    share, lower, upper = (predicted[c].to_numpy() for c in ("share", "lower", "upper"))
    assert ((0 <= lower) & (lower <= share) & (share <= upper) & (upper <= 1)).all()
    assert (upper - lower).min() > 0.1  # a quantile of 0.6 gives wide intervals: really applied
    for _, cell in predicted.groupby("country", sort=False):  # each cell's bounds are the saved fit's on its row
        low, high = INTERVALS.bounds([cell["share"].tolist()])
        assert cell["lower"].tolist() == pytest.approx(low[0]) and cell["upper"].tolist() == pytest.approx(high[0])
    record = predicted.attrs["intervals"]
    assert record["level"] == 0.9 and record["score"] == "binomial" and record["quantile"] == 0.6
    assert record["fitted_on"] == "C1-Q2" and record["from"] == str(trusted / "calibration.json")


def test_each_country_gets_the_k_of_its_closest_evaluated_subset(predicted, trusted):
    record = predicted.attrs["effective_respondents"]
    assert record["from"] == str(trusted.parent / "metrics.json") and record["training_group"] == "C1"
    countries = record["countries"]
    assert countries["Japan"]["k"] == 120 and list(countries["Japan"]["subsets"]) == ["C1-Q3"]
    assert countries["Japan"]["setting"] == "a training country, a new question"
    assert countries["Kenya"]["k"] == 40 and list(countries["Kenya"]["subsets"]) == ["C2-Q3"]
    assert countries["Colombia"]["k"] == 61 and list(countries["Colombia"]["subsets"]) == ["C3-Q3"]
    assert countries["Nigeria"]["k"] == 51 and list(countries["Nigeria"]["subsets"]) == ["C2-Q3", "C3-Q3"]
    assert all(c["setting"] == "an unseen country, a new question" for n, c in countries.items() if n != "Japan")


def test_the_closest_setting_rule_and_what_is_missing(tmp_path):
    assert closest_subsets(("C1",), "C1", ("C1", "C2", "C3"))[0] == ["C1-Q3"]
    assert closest_subsets(("C2", "C3"), "C1", ("C1", "C2", "C3"))[0] == ["C2-Q3", "C3-Q3"]
    assert closest_subsets((), "C1", ("C1", "C2", "C3"))[0] == ["C2-Q3", "C3-Q3"]  # a country in no WVS group
    groups = {"Japan": ("C1",), "Nigeria": ("C2", "C3")}

    def record(table):
        (tmp_path / "metrics.json").write_text(json.dumps(table), encoding="utf-8")
        return respondents_record(str(tmp_path / "adapter"), list(groups), lambda: groups, ("C1", "given"),
                                  ("C1", "C2", "C3"))

    beyond = record({"effective_respondents": {"C1-Q3": {"k": 100000, "bound": "at_least"},
                                               "C2-Q3": {"k": 7, "bound": None}}})
    assert beyond["countries"]["Japan"]["bound"] == "at_least"
    assert beyond["countries"]["Nigeria"]["k"] == 7 and beyond["countries"]["Nigeria"]["missing"] == ["C3-Q3"]
    none = record({"effective_respondents": {"C1-Q2": {"k": 3}}})["countries"]["Japan"]
    assert none["k"] is None and none["missing"] == ["C1-Q3"]
    assert "has no effective_respondents" in record({"subsets": {}})["note"]
    (tmp_path / "metrics.json").unlink()
    assert "no metrics.json in the adapter's run folder" in respondents_record(
        str(tmp_path / "adapter"), ["Japan"], lambda: groups, ("C1", "given"), ("C1",))["note"]


def test_the_training_group_is_read_from_the_manifest():
    from types import SimpleNamespace

    assert training_group(SimpleNamespace(manifest={"training_data": {"subset": "C2-Q1"}}))[0] == "C2"
    group, how = training_group(SimpleNamespace(manifest=None))
    assert group == "C1" and how.startswith("assumed")


def test_share_cells_read_like_34_percent_in_brackets():
    assert share_cell(0.3449, 0.281, 0.412) == "34% [28–41%]"
    assert share_cell(0.7, math.nan, math.nan) == "70%"  # an observed cell: no interval


def test_outputs_show_the_intervals_and_k(predicted, trusted, tmp_path):
    from simlab.simulate import write_simulation

    write_simulation(predicted, tmp_path)
    frame = pd.read_csv(tmp_path / "simulation.csv")
    assert list(frame.columns) == COLUMNS
    assert frame["lower"].to_numpy() == pytest.approx(predicted["lower"].to_numpy(), abs=1e-9)
    assert ((frame["lower"] <= frame["share"]) & (frame["share"] <= frame["upper"])).all()

    md = (tmp_path / "simulation.md").read_text(encoding="utf-8")
    japan = predicted[predicted["country"] == "Japan"]
    cells = " | ".join(share_cell(*v) for v in zip(japan["share"], japan["lower"], japan["upper"]))
    assert f"| Japan | {cells} |" in md
    assert re.search(r"\| Kenya \| \d+% \[\d+–\d+%\] \| \d+% \[\d+–\d+%\] \| \d+% \[\d+–\d+%\] \|", md)
    assert "90% prediction intervals" in md and "about 120 respondents (C1-Q3" in md
    assert "about 51 respondents (median of C2-Q3, C3-Q3" in md

    meta = json.loads((tmp_path / "simulation.meta.json").read_text())
    assert meta["intervals"]["level"] == 0.9 and meta["intervals"]["score"] == "binomial"
    assert meta["intervals"]["from"] == str(trusted / "calibration.json")
    assert meta["effective_respondents"]["countries"]["Kenya"]["subsets"] == {"C2-Q3": {"k": 40, "bound": None}}
    png = tmp_path / meta["files"]["images"]["cars"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_populations_and_observed_cells(trusted, tiny_llama_dir, shared_data, tmp_path):
    from simlab.simulate import make_question, read_observed, write_simulation

    question = make_question("Should cities ban cars?", OPTIONS, "cars")
    observed = tmp_path / "observed.csv"
    observed.write_text("question_id,country,letter,share\ncars,Kenya,A,70\ncars,Kenya,B,20\ncars,Kenya,C,10\n",
                        encoding="utf-8")
    rows = read_observed(observed, [question], COUNTRIES)
    sim = simulator(tiny_llama_dir, trusted, shared_data, temperature=TEMPERATURE, observed=rows,
                    known_countries=COUNTRIES)
    frame = sim.predict_questions([question], ["Kenya"], groups=["sex"])
    assert list(frame.columns)[-4:] == ["share", "lower", "upper", "source"]
    seen = frame[frame["source"] == "observed"]  # Kenya's overall result, shown beside its subgroups
    assert list(seen["population"].unique()) == ["Kenya"] and seen[["lower", "upper"]].isna().all().all()
    simulated = frame[frame["source"] == "simulated"]
    assert len(simulated) == 2 * 3 and ((simulated["lower"] <= simulated["share"])
                                        & (simulated["share"] <= simulated["upper"])).all()
    assert frame.attrs["effective_respondents"]["countries"]["Kenya"]["k"] == 40

    write_simulation(frame, tmp_path / "out")
    md = (tmp_path / "out" / "simulation.md").read_text(encoding="utf-8")
    assert "| Kenya | *whole country (observed)* | 70% | 20% | 10% |" in md
    assert re.search(r"\| Kenya \| sex=female \| \d+% \[\d+–\d+%\] \|", md) and "Observed cells have none." in md
    table = pd.read_csv(tmp_path / "out" / "simulation.csv", keep_default_na=False)
    assert list(table.loc[table["source"] == "observed", "lower"]) == [""] * 3  # empty in the CSV
    assert json.loads((tmp_path / "out" / "simulation.meta.json").read_text())["intervals"]["level"] == 0.9
    assert (tmp_path / "out" / "simulation_01_cars.png").stat().st_size > 10_000


def test_without_intervals_the_outputs_are_as_before(plain, trusted, tiny_llama_dir, shared_data, tmp_path):
    """No intervals saved: the same columns, CSV, markdown and chart as a frame without the trust records (the
    writer's code path before them), and a note in simulation.meta.json; k is still recorded there."""
    from simlab.simulate import COLUMNS as PLAIN_COLUMNS
    from simlab.simulate import write_simulation

    frame = simulator(tiny_llama_dir, plain, shared_data).predict("Should cities ban cars?", OPTIONS, COUNTRIES,
                                                                  id="cars")
    assert list(frame.columns) == PLAIN_COLUMNS and frame.attrs["intervals"] == {"note": NO_INTERVALS}
    assert frame.attrs["effective_respondents"]["countries"]["Japan"]["k"] == 120
    before = frame.copy()
    before.attrs = {k: v for k, v in frame.attrs.items() if k not in ("intervals", "effective_respondents")}
    write_simulation(frame, tmp_path / "now")
    write_simulation(before, tmp_path / "before")
    for name in ("simulation.csv", "simulation.md", "simulation_01_cars.png"):
        assert (tmp_path / "now" / name).read_bytes() == (tmp_path / "before" / name).read_bytes(), name
    now = json.loads((tmp_path / "now" / "simulation.meta.json").read_text())
    assert now["intervals"] == {"note": NO_INTERVALS}
    assert {k: v for k, v in now.items() if k not in ("intervals", "effective_respondents")} == json.loads(
        (tmp_path / "before" / "simulation.meta.json").read_text())

    # intervals fitted for the calibrated simulator are not put on another temperature's shares
    other = simulator(tiny_llama_dir, trusted, shared_data).predict("Ban cars?", OPTIONS, ["Japan"])
    assert "lower" not in other.columns and "temperature 1.5" in other.attrs["intervals"]["note"]
    bare = simulator(tiny_llama_dir, None, shared_data).predict("Ban cars?", OPTIONS, ["Japan"])
    assert "lower" not in bare.columns and "no adapter" in bare.attrs["effective_respondents"]["note"]


def test_task_simulate_applies_the_calibrated_simulators_intervals(trusted, tiny_llama_dir, shared_data, tmp_path):
    from omegaconf import OmegaConf

    from simlab.simulate import simulate_task

    questions = tmp_path / "q.yaml"
    questions.write_text("- id: cars\n  text: Ban cars?\n  options: [Yes, No]\n", encoding="utf-8")

    def run(*overrides):
        composed = compose_config("task=simulate", "model=hf", f"model.path={tiny_llama_dir}",
                                  f"model.adapter={trusted}", f"data.root={shared_data}", f"simulate.input={questions}",
                                  "simulate.countries=[Japan,Kenya]", f"paths.output_dir={tmp_path}", *overrides)
        cfg = {k: OmegaConf.to_container(composed[k], resolve=True) for k in ("model", "data", "simulate")}
        out = tmp_path / f"out{len(overrides)}"
        simulate_task(cfg, out)
        return pd.read_csv(out / "simulation.csv"), json.loads((out / "simulation.meta.json").read_text())

    frame, meta = run()  # the adapter's temperature, so its intervals
    assert list(frame.columns) == COLUMNS and np.isfinite(frame[["lower", "upper"]].to_numpy()).all()
    assert meta["intervals"]["level"] == 0.9 and meta["effective_respondents"]["countries"]["Kenya"]["k"] == 40
    frame, meta = run("simulate.calibrated=false")
    assert "lower" not in frame.columns and "fitted for its calibrated simulator" in meta["intervals"]["note"]
