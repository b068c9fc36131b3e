"""Simulate answer distributions for new questions and countries with a (fine-tuned) language model.

The point of the framework: ask a question that was never surveyed, for the countries you care about, and
read the model's predicted share of each answer option. Prompts are the paper's (the WVS instruction naming
the country, the question, the lettered options, the answer prefix) and scoring is exactly the evaluation
path (:func:`simlab.model.scoring.simulator_logits` + masked softmax, with the adapter's saved temperature and prior),
so a simulation means what a test score means.

Notebook use (no Hydra needed)::

    from simlab.simulate import Simulator
    sim = Simulator.from_run("outputs/finetune/<run>")          # the run's model + its adapter
    df = sim.predict("Should cities ban cars from their centre?", ["Yes", "No"], ["Japan", "Kenya"])
    df.attrs["caution"]

``python run.py task=simulate`` goes through :func:`simulate_task`, which uses the same :class:`Simulator`.

Subgroups: ``sim.predict(..., ["Kenya"], groups=["sex", "age"])`` or ``populations=[{"country": "Kenya",
"sex": "female"}]`` simulates populations (a country plus attributes), side by side per country.

Modules: :mod:`.questions` (what is asked, and the input errors), :mod:`.countries` (the names a simulation may
use), :mod:`.populations` (the populations asked: subgroups, groups, their table), :mod:`.observed` (surveyed
cells and the survey prior), :mod:`.simulator` (the :class:`Simulator`), :mod:`.trust` (the adapter's prediction
intervals on every share, the effective respondents of the closest evaluated subset), :mod:`.outputs` (the CSV,
sidecar, markdown and charts; :mod:`.interval_chart` with intervals), :mod:`.task` (``task=simulate``).
"""

from simlab.data.prompts import PromptTooLongError
from simlab.simulate.countries import WVS_GROUPS, check_countries, wvs_countries
from simlab.simulate.observed import SIMULATED_SURVEY, cell_row, read_observed, simulation_prior_rows
from simlab.simulate.outputs import write_simulation
from simlab.simulate.questions import (
    LETTERS,
    OPTIONS_INTRO,
    QUESTION_FIELDS,
    Question,
    SimulationInputError,
    input_location,
    make_question,
    read_questions,
)
from simlab.simulate.simulator import CAUTION, COLUMNS, Simulator, model_max_length
from simlab.simulate.task import simulate_task

__all__ = [
    "CAUTION",
    "COLUMNS",
    "LETTERS",
    "OPTIONS_INTRO",
    "QUESTION_FIELDS",
    "SIMULATED_SURVEY",
    "WVS_GROUPS",
    "PromptTooLongError",
    "Question",
    "SimulationInputError",
    "Simulator",
    "cell_row",
    "check_countries",
    "input_location",
    "make_question",
    "model_max_length",
    "read_observed",
    "read_questions",
    "simulate_task",
    "simulation_prior_rows",
    "write_simulation",
    "wvs_countries",
]
