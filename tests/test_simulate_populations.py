"""Simulating subgroups (issue 22): populations in the API and task=simulate, simulate.groups, the prompts per
attribute, the outputs side by side, observed subgroups and a country's observed overall result (the breakdown
use), on the tiny random Llama; and country simulations byte-identical to before."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from simlab.data.populations import GROUP_VALUES, Population, PopulationWording

KNOWN = ["Japan", "Kenya", "Brazil"]
FEMALE_30 = {"country": "Kenya", "sex": "female", "age": "30-49"}


def run_py(*overrides):
    return subprocess.run([sys.executable, "run.py", *overrides], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def sim(tiny_llama_dir, shared_data):
    from simlab.simulate import Simulator

    return Simulator({"path": str(tiny_llama_dir)}, data_root=shared_data, known_countries=KNOWN, device="cpu")


def resolve(countries=None, populations=None, groups=None, group_values=None, known=KNOWN):
    from simlab.simulate.populations import resolve_populations

    return resolve_populations(countries, populations, groups, known, PopulationWording(), group_values,
                               prefix="simulate.")


# ------------------------------------------------------------------------------------------- which populations
def test_groups_split_each_country_into_its_subgroups():
    keys = [p.key for p in resolve(["Kenya"], groups="sex,age")]
    assert keys == [f"Kenya | sex={s}, age={a}" for s in ("female", "male") for a in ("16-29", "30-49", "50+")]
    assert [p.key for p in resolve(["Kenya"], groups=["age", "sex"])] == keys  # the attributes' own order
    assert resolve(["Kenya", "Japan"]) is None  # countries only: the country simulation of before
    both = resolve(["Japan"], populations=[FEMALE_30, {"country": "Brazil"}], groups=["sex"])
    assert [p.key for p in both] == ["Japan | sex=female", "Japan | sex=male", "Kenya | sex=female, age=30-49",
                                     "Brazil"]
    assert len(resolve(groups=["settlement"])) == 2 * len(KNOWN)  # no countries listed: every country
    assert [p.key for p in resolve(populations=[FEMALE_30])] == ["Kenya | sex=female, age=30-49"]  # only those
    bands = resolve(["Kenya"], groups=["age"], group_values={"age": ["18-34", "35+"]})
    assert [p.key for p in bands] == ["Kenya | age=18-34", "Kenya | age=35+"]
    assert set(GROUP_VALUES) == {"sex", "age", "education", "income", "settlement"}


@pytest.mark.parametrize("kwargs, message", [
    ({"countries": ["Kenya"], "groups": ["sexx"]},
     "simulate.groups: unknown group 'sexx'; known: sex, age, education, income, settlement"),
    ({"countries": ["Kenya"], "groups": ["region"]}, "simulate.groups: unknown group 'region'"),
    ({"countries": ["Kenya"], "groups": ["sex", "sex"]}, "simulate.groups: group 'sex' is listed twice"),
    ({"countries": ["Kenya"], "groups": []}, "simulate.groups: names no attribute"),
    ({"populations": [FEMALE_30, {"country": "Kenya", "gender": "female"}]},
     "simulate.populations: entry 1: field 'gender': unknown population attribute; known: country, sex, age"),
    ({"populations": [{"country": "Kenia", "sex": "female"}]},
     "simulate.populations: entry 0: field 'country': unknown country 'Kenia'; did you mean 'Kenya'?"),
    ({"populations": [{"sex": "female"}]}, "simulate.populations: entry 0: a population needs a non-empty 'country'"),
    ({"populations": [{"country": "Kenya", "sex": "femal"}]},
     "simulate.populations: Kenya | sex=femal: no wording for population attribute sex='femal'"),
    ({"populations": [FEMALE_30, dict(FEMALE_30)]},
     "simulate.populations: population 'Kenya | sex=female, age=30-49' is asked twice"),
    ({"countries": ["Kenya"], "groups": ["sex"], "populations": [{"country": "Kenya", "sex": "male"}]},
     "population 'Kenya | sex=male' is asked twice"),
    ({"populations": []}, "simulate.populations: is empty"),
    ({"populations": [FEMALE_30], "groups": ["sex"]},
     "simulate.groups: splits the countries of simulate.countries, which names none (only simulate.populations)"),
    ({"countries": ["Kenya"], "groups": ["age"], "group_values": {"age": []}},
     "simulate.group_values: field 'age': must be a list of distinct non-empty labels"),
])
def test_bad_populations_are_one_line_errors(kwargs, message):
    from simlab.simulate import SimulationInputError

    with pytest.raises(SimulationInputError) as err:
        resolve(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_unknown_group_is_a_one_line_error_before_the_model_loads(tmp_path, shared_data):
    questions = tmp_path / "q.yaml"
    questions.write_text("- id: cars\n  text: Ban cars?\n  options: [Yes, No]\n", encoding="utf-8")
    result = run_py("task=simulate", "model=hf", f"model.path={tmp_path / 'no_model_here'}",
                    f"simulate.input={questions}", "simulate.countries=[Kenya]", "simulate.groups=[sex,agee]",
                    f"data.root={shared_data}", f"hydra.run.dir={tmp_path / 'out'}")
    assert result.returncode != 0
    assert "simulate.groups: unknown group 'agee'; known: sex, age, education, income, settlement" in result.stderr
    assert not (tmp_path / "out" / "simulation.csv").exists()


# ------------------------------------------------------------------------------------------- prompts
def test_prompts_name_each_attribute(sim):
    from simlab.data.prompts import PromptFormat
    from simlab.simulate import make_question

    question = make_question("Ban cars?", ["Yes", "No"])
    render = PromptFormat(style="plain")
    female = Population("Kenya", (("sex", "female"), ("age", "30-49")))
    assert sim.prompt_text(question, female) == render.render_parts(
        "How would a woman aged 30 to 49 from Kenya answer the following question:\n\n", question.prompt_input,
        question.lettered_options, sim.tokenizer)
    assert sim.prompt_text(question, Population("Kenya")) == sim.prompt_text(question, "Kenya")  # the paper's
    phrases = {("sex", "male"): "How would a man from Kenya", ("age", "50+"): "someone aged 50 or older from",
               ("education", "higher"): "someone with tertiary education from",
               ("income", "low"): "someone with a low income from",
               ("settlement", "rural"): "someone living in the countryside from"}
    for name, values in GROUP_VALUES.items():  # every value of the table can be said, in words
        for value in values:
            text = sim.prompt_text(question, Population("Kenya", ((name, value),)))
            said = PopulationWording().describe(((name, value),))
            assert text.startswith(f"How would {said} from Kenya answer the following question:\n\n")
            assert said != "someone" and "=" not in said
            if (name, value) in phrases:
                assert phrases[(name, value)] in text


def test_the_adapters_wording_names_every_population(tiny_llama_dir, shared_data, tmp_path):
    """An adapter trained on population rows records its wording in simulator.json; the simulator uses it."""
    from simlab.model import load_language_model
    from simlab.simulate import Simulator, make_question
    from simlab.simulator.bundle import Bundle, LoadedSimulator, manifest_from_config

    wording = {"_target_": "simlab.data.populations.PopulationWording",
               "template": "Imagine {population} in {country}.\n", "someone": "a person"}
    cfg = {"model": {"loader": {"path": "m"}}, "data": {"population_wording": wording}}
    manifest = manifest_from_config(cfg, prior_build=None, data=None, code=None)
    assert manifest["prompt"]["population_wording"] == wording
    assert "population_wording" not in manifest_from_config({"model": {"loader": {}}, "data": {}}, prior_build=None,
                                                            data=None, code=None)["prompt"]  # countries: as before
    bundle = Bundle(tmp_path, {}, manifest)
    assert bundle.population_wording == manifest["prompt"]["population_wording"]
    assert Bundle(tmp_path, {}, {"prompt": {}}).population_wording is None  # read with a default

    lm = load_language_model(path=str(tiny_llama_dir))
    loaded = LoadedSimulator(lm=lm, adapter=None, settings={}, bundle=bundle)
    trained = Simulator(loaded, known_countries=KNOWN, data_root=shared_data)
    question = make_question("Ban cars?", ["Yes", "No"])
    assert trained.prompt_text(question, Population("Kenya", (("sex", "female"),))).startswith(
        "Imagine a woman in Kenya.\n")
    assert trained.prompt_text(question, Population("Kenya", (("age", "50+"),))).startswith(
        "Imagine a person aged 50 or older in Kenya.\n")
    assert trained.prompt_text(question, "Kenya") == trained.prompt_text(question, Population("Kenya"))
    assert "How would someone from Kenya answer the following question:" in trained.prompt_text(question, "Kenya")
    assert trained.wording_source == "adapter"
    asked = Simulator(LoadedSimulator(lm=lm, adapter=None, settings={}, bundle=bundle), known_countries=KNOWN,
                      population_wording={"template": "Think of {population} ({country}):\n"})
    assert asked.prompt_text(question, Population("Kenya", (("sex", "male"),))).startswith("Think of a man (Kenya):")
    with pytest.raises(ValueError, match="may only use the placeholders"):
        Simulator(LoadedSimulator(lm=lm, adapter=None, settings={}), population_wording={"template": "{people}"})


# ------------------------------------------------------------------------------------------- predictions
def test_predict_by_population_puts_subgroups_side_by_side(sim):
    by_country = sim.predict("Ban cars?", ["Yes", "No", "Maybe"], ["Kenya", "Japan"], id="cars")
    frame = sim.predict("Ban cars?", ["Yes", "No", "Maybe"], ["Kenya"], id="cars", groups=["sex"],
                        populations=[{"country": "Japan"}, {"country": "Japan", "age": "50+"}])
    assert list(frame.columns) == ["question_id", "population", "country", "sex", "age", "letter", "option", "share",
                                   "source"]
    assert set(frame["source"]) == {"simulated"}
    assert list(dict.fromkeys(frame["population"])) == ["Kenya | sex=female", "Kenya | sex=male", "Japan",
                                                        "Japan | age=50+"]
    assert frame.groupby("population")["share"].sum().to_numpy() == pytest.approx(1.0, abs=1e-6)
    japan = frame[frame["population"] == "Japan"]
    assert list(japan["sex"]) == [""] * 3 and list(japan["option"]) == ["Yes", "No", "Maybe"]
    same = by_country[by_country["country"] == "Japan"]["share"].to_numpy()
    assert japan["share"].to_numpy() == pytest.approx(same, abs=1e-6)  # a whole country: the country's prompt
    old = frame[frame["population"] == "Japan | age=50+"]["share"].to_numpy()
    assert np.abs(old - same).max() > 1e-5  # another prompt, another answer
    assert frame.attrs["populations"][3] == {"country": "Japan", "age": "50+"}
    assert frame.attrs["countries"] == ["Kenya", "Japan"]
    # population dicts where countries go: the same simulation
    again = sim.predict("Ban cars?", ["Yes", "No", "Maybe"], [{"country": "Kenya", "sex": "female"}], id="cars")
    assert again["share"].to_numpy() == pytest.approx(
        frame[frame["population"] == "Kenya | sex=female"]["share"].to_numpy(), abs=1e-6)


GOLDEN_CSV = """\
question_id,country,letter,option,share,source
cars,Kenya,A,Agree,0.25,simulated
cars,Kenya,B,'=Disagree,0.75,simulated
cars,Japan,A,Agree,0.6,simulated
cars,Japan,B,'=Disagree,0.4,simulated
"""
GOLDEN_TABLE = """\
## cars: Ban cars?

| country | A: Agree | B: =Disagree |
|---|---:|---:|
| Japan | 60.0% | 40.0% |
| Kenya | 25.0% | 75.0% |

![cars](simulation_01_cars.png)
"""


def test_country_outputs_are_unchanged(tmp_path, sim):
    """Without populations the outputs are byte for byte those of before populations existed (these strings and
    keys were written by the code of that time on this frame), with issue 21's ``source`` column."""
    from simlab.simulate import CAUTION, COLUMNS, write_simulation

    frame = pd.DataFrame.from_records([
        ("cars", "Kenya", "A", "Agree", 0.25, "simulated"), ("cars", "Kenya", "B", "=Disagree", 0.75, "simulated"),
        ("cars", "Japan", "A", "Agree", 0.6, "simulated"), ("cars", "Japan", "B", "=Disagree", 0.4, "simulated")],
        columns=COLUMNS)
    frame.attrs.update(model="tiny", model_source="tiny", adapter=None, prompt_style="plain", caution=CAUTION,
                       questions={"cars": {"text": "Ban cars?", "options": ["Agree", "=Disagree"]}},
                       countries=["Kenya", "Japan"])
    write_simulation(frame, tmp_path)
    assert (tmp_path / "simulation.csv").read_text() == GOLDEN_CSV
    md = (tmp_path / "simulation.md").read_text()
    assert GOLDEN_TABLE in md and "population" not in md and "observed" not in md
    meta = json.loads((tmp_path / "simulation.meta.json").read_text())
    assert list(meta) == ["model", "model_source", "adapter", "prompt_style", "input", "countries", "questions",
                          "files", "caution"]
    predicted = sim.predict("Ban cars?", ["Yes", "No"], ["Kenya", "Japan"])
    assert list(predicted.columns) == COLUMNS and "populations" not in predicted.attrs


# ------------------------------------------------------------------------------------------- observed, breakdown
OBSERVED = """\
question_id,country,sex,letter,share
cars,Kenya,,A,70
cars,Kenya,,B,30
cars,Kenya,female,A,80
cars,Kenya,female,B,20
cars,Japan,male,A,10
cars,Japan,male,B,90
"""


@pytest.fixture()
def observed_rows(tmp_path):
    from simlab.simulate import make_question, read_observed

    path = tmp_path / "observed.csv"
    path.write_text(OBSERVED, encoding="utf-8")
    question = make_question("Ban cars?", ["Yes", "No"], "cars")
    return question, read_observed(path, [question], KNOWN)


def test_observed_rows_may_name_a_subgroup(observed_rows):
    _, rows = observed_rows
    assert [(r.population_key, r.target) for r in rows] == [("Kenya", (0.7, 0.3)), ("Kenya | sex=female", (0.8, 0.2)),
                                                            ("Japan | sex=male", (0.1, 0.9))]


class BreakdownPrior:
    """A stand-in for prior=breakdown: the subgroup's country overall shares, halved towards uniform."""

    settings = {"use": "breakdown"}

    def __init__(self):
        self.rows = []

    def prior(self, row):
        self.rows.append(row)
        if row.country_target is None:
            return np.full(len(row.letters), 1 / len(row.letters))
        return 0.5 * np.asarray(row.country_target) + 0.5 / len(row.letters)


def test_a_countrys_overall_result_is_shown_and_used_only_by_a_breakdown_prior(tiny_llama_dir, shared_data,
                                                                              observed_rows, tmp_path):
    from simlab.simulate import SimulationInputError, Simulator, write_simulation

    question, rows = observed_rows
    model = {"path": str(tiny_llama_dir)}
    bare = Simulator(model, data_root=shared_data, known_countries=KNOWN)
    plain = bare.predict_questions([question], ["Kenya"], groups=["sex"])
    shown = Simulator(model, data_root=shared_data, known_countries=KNOWN, observed=rows)
    frame = shown.predict_questions([question], ["Kenya"], groups=["sex"])
    # no breakdown prior: the overall result is shown beside the subgroups, the simulation is the bare model's
    assert list(dict.fromkeys(frame["population"])) == ["Kenya", "Kenya | sex=female", "Kenya | sex=male"]
    assert list(frame["source"]) == ["observed"] * 4 + ["simulated"] * 2
    assert frame["share"].iloc[4:].to_numpy() == pytest.approx(plain["share"].iloc[2:].to_numpy(), abs=1e-6)
    assert list(frame["share"].iloc[:4]) == pytest.approx([0.7, 0.3, 0.8, 0.2])  # surveyed: shown, not simulated
    uses = frame.attrs["observed_populations"]
    assert uses["breakdown_inputs"] == ["cars: Kenya"] and uses["breakdown"].startswith("not used: the simulator has "
                                                                                         "no breakdown prior")
    assert uses["shown"] == ["cars: Kenya", "cars: Kenya | sex=female"]
    assert uses["not_used"] == ["cars: Japan | sex=male"]  # a subgroup not simulated: recorded, never dropped

    write_simulation(frame, tmp_path)
    meta = json.loads((tmp_path / "simulation.meta.json").read_text())
    assert meta["observed_populations"]["breakdown"] == uses["breakdown"] and meta["attributes"] == ["sex"]
    assert meta["populations"] == [{"country": "Kenya", "sex": "female"}, {"country": "Kenya", "sex": "male"}]
    md = (tmp_path / "simulation.md").read_text()
    assert "| Kenya | *whole country (observed)* | 70.0% | 30.0% |" in md
    assert "| Kenya | *sex=female (observed)* | 80.0% | 20.0% |" in md and "| Kenya | sex=male |" in md
    assert "not used: the simulator has no breakdown prior" in md
    csv = pd.read_csv(tmp_path / "simulation.csv", keep_default_na=False)
    assert list(csv.columns) == ["question_id", "population", "country", "sex", "letter", "option", "share",
                                 "source"]
    assert (tmp_path / "simulation_01_cars.png").stat().st_size > 10_000

    # a breakdown prior: each subgroup's prior is its country's overall result, never the subgroup's own shares
    prior = BreakdownPrior()
    anchored = Simulator(model, data_root=shared_data, known_countries=KNOWN, observed=rows, prior=prior)
    result = anchored.predict_questions([question], ["Kenya"], groups=["sex"])
    assert [(r.population_key, r.country_target) for r in prior.rows] == [("Kenya | sex=male", (0.7, 0.3))]
    assert all(r.target == (0.5, 0.5) for r in prior.rows)  # a placeholder: the cell's own shares are unknown
    expected = np.array([0.6, 0.4]) * plain["share"].to_numpy()[2:]
    assert result["share"].iloc[4:].to_numpy() == pytest.approx(expected / expected.sum(), abs=1e-6)
    assert result.attrs["observed_populations"]["breakdown"].startswith("used: the simulator's breakdown prior")
    with pytest.raises(SimulationInputError, match=r"^observed: the simulator's prior is a breakdown prior .*give it "
                                                   r"as a row without attributes for cars: Japan$"):
        anchored.predict_questions([question], ["Kenya", "Japan"], groups=["sex"])
    with pytest.raises(SimulationInputError, match=r"^populations: .* it simulates subgroups, not whole countries "
                                                   r"\(Kenya\)$"):
        anchored.predict_questions([question], [{"country": "Kenya"}])


def test_the_prior_rows_of_a_simulation_by_use(observed_rows, shared_data, tmp_path):
    """The observed whole countries join the run's prior rows, never an observed subgroup; a breakdown prior
    learns its subgroup shifts from the training rows alone (the overall results are its inputs)."""
    from conftest import compose_config
    from omegaconf import OmegaConf

    from simlab.simulate import simulation_prior_rows

    _, rows = observed_rows
    composed = compose_config(f"data.root={shared_data}", f"paths.output_dir={tmp_path}")
    cfg = {"data": OmegaConf.to_container(composed.data, resolve=True)}
    training = simulation_prior_rows(cfg, [])
    assert training and simulation_prior_rows(cfg, rows)[len(training):] == rows[:1]  # Kenya's overall result
    cfg["prior"] = {"use": "breakdown"}
    assert len(simulation_prior_rows(cfg, rows)) == len(training)


def test_subgroup_cells_without_subgroups_to_simulate_are_refused(tmp_path, shared_data):
    from simlab.simulate import simulate_task

    questions = tmp_path / "q.yaml"
    questions.write_text("- id: cars\n  text: Ban cars?\n  options: [Yes, No]\n", encoding="utf-8")
    observed = tmp_path / "observed.csv"
    observed.write_text(OBSERVED, encoding="utf-8")
    cfg = {"simulate": {"input": str(questions), "countries": ["Kenya"], "observed": str(observed)},
           "data": {"root": str(shared_data)}}
    with pytest.raises(ValueError, match=r"observed.csv has subgroup cells \(Kenya \| sex=female\.\.\.\) but no "
                                         r"subgroup is simulated: set simulate.groups or simulate.populations"):
        simulate_task(cfg, tmp_path / "out")


def test_cli_simulates_subgroups_with_observed_cells(tiny_llama_dir, shared_data, tmp_path):
    questions = tmp_path / "q.yaml"
    questions.write_text("- id: cars\n  text: Ban cars?\n  options: [Yes, No]\n", encoding="utf-8")
    observed = tmp_path / "observed.csv"
    observed.write_text(OBSERVED, encoding="utf-8")
    out = tmp_path / "out"
    result = run_py("task=simulate", "model=hf", f"model.path={tiny_llama_dir}", f"simulate.input={questions}",
                    "simulate.countries=[Kenya]", "simulate.groups=[sex,age]",
                    "simulate.populations=[{country:Japan,sex:male},{country:Brazil}]", f"simulate.observed={observed}",
                    f"data.root={shared_data}", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    frame = pd.read_csv(out / "simulation.csv", keep_default_na=False)
    assert list(frame.columns) == ["question_id", "population", "country", "sex", "age", "letter", "option", "share",
                                   "source"]
    keys = list(dict.fromkeys(frame["population"]))
    assert keys[0] == "Kenya" and len(keys) == 1 + 6 + 2 and keys[-2:] == ["Japan | sex=male", "Brazil"]
    japan = frame[frame["population"] == "Japan | sex=male"]
    assert list(japan["share"]) == pytest.approx([0.1, 0.9]) and set(japan["source"]) == {"observed"}
    meta = json.loads((out / "simulation.meta.json").read_text())
    assert meta["countries"] == ["Kenya", "Japan", "Brazil"] and len(meta["populations"]) == 8
    assert meta["population_wording"]["from"] == "default"  # the bare model
    assert meta["population_wording"]["subjects"]["sex"] == {"female": "a woman", "male": "a man"}
    assert meta["observed_populations"]["not_used"] == ["cars: Kenya | sex=female"]  # Kenya: split by sex and age
    assert "no breakdown prior" in meta["observed_populations"]["breakdown"]
    # issue 21's record beside it: 3 observed cells, 2 shown (Kenya's overall result beside its subgroups, Japan's men)
    assert meta["observed"]["countries"] == ["Japan", "Kenya"] and meta["observed"]["cells"] == 3
    assert meta["observed"]["cells_shown"] == 2
    md = (out / "simulation.md").read_text()
    assert "| Kenya | sex=female, age=30-49 |" in md and "| Brazil | whole country |" in md
