"""data=wvs_populations: the config mirrors PopulationWording, subgroup rows' prompts come from the configured
wording (whole-country rows untouched), question-first order, the attribute-[ctrl] and the country [ctrl] on
subgroup rows, their prior, the predictions records and the tables that show a row's population."""

from __future__ import annotations

import json

import pytest
from conftest import compose_config, paper_row, write_rows
from hydra.utils import instantiate
from population_data import GROUPS, population_rows, write_population_data

from simlab.data import SurveyDataModule
from simlab.data.frames import LONG_COLUMNS, WIDE_COLUMNS, rows_table
from simlab.data.population_prompts import as_wording, replace_attributes
from simlab.data.populations import PopulationWording, ordered_attributes
from simlab.runs.predictions import prediction_records

SUBSET_SIZES = {"C1-Q1": 8, "C1-Q2": 4, "C1-Q3": 4, "C2-Q1": 4, "C2-Q2": 2, "C2-Q3": 2, "C3-Q1": 4, "C3-Q2": 2,
                "C3-Q3": 2}
SUBGROUPS = [ordered_attributes(g) for g in GROUPS]


@pytest.fixture(scope="module")
def population_root(tmp_path_factory):
    return write_population_data(tmp_path_factory.mktemp("populations"))


def data_config(root, *overrides):
    return compose_config("data=wvs_populations", f"data.root={root}", "data.invalid_rows_file=null", *overrides).data


def load(root, *overrides, tokenizer=None) -> SurveyDataModule:
    datamodule = instantiate(data_config(root, *overrides), tokenizer=tokenizer)
    datamodule.load_rows()
    return datamodule


def test_the_config_mirrors_the_code():
    cfg = data_config("unused")
    assert instantiate(cfg.population_wording) == PopulationWording()
    from omegaconf import OmegaConf

    assert as_wording(OmegaConf.to_container(cfg.population_wording)) == PopulationWording()  # as a re-analysis reads
    assert cfg.attribute_control is False and "wvs7_populations/populations_test.json" in cfg.files


def test_population_rows_split_and_prompt_as_configured(population_root):
    dm = load(population_root)
    assert {s: len(r) for s, r in dm.rows.items()} == SUBSET_SIZES
    row = dm.rows["C2-Q1"][0]
    assert row.population_key == "Kenya | sex=female, age=30-49" and row.n_eff == 80.5 and row.n == 120
    assert row.instruction == "How would a woman aged 30 to 49 from Kenya answer the following question:\n\n"
    assert row.country_target is not None and abs(sum(row.country_target) - 1) < 1e-9
    custom = load(population_root, "data.population_wording.template='What would {population} in {country} say? '",
                  "data.population_wording.subjects.sex.female=a female respondent")
    assert custom.rows["C2-Q1"][0].instruction == "What would a female respondent aged 30 to 49 in Kenya say? "
    assert custom.rows["C2-Q1"][1].instruction == "What would a man aged 50 or older in Kenya say? "
    assert [r.target for r in custom.rows["C2-Q1"]] == [r.target for r in dm.rows["C2-Q1"]]


def test_whole_country_rows_keep_their_instruction_and_bad_wording_is_refused(tmp_path):
    # another question than the population row's (one question id has one wording: simlab.data.checks)
    rows = [paper_row(id="165", instruction="How would   someone from Andorra answer the following question:\n\n"),
            {**population_rows()[0], "data_type": "valid"}]
    write_rows(tmp_path / "mixed.json", rows)
    wording = {"template": "{population} of {country}: ", "someone": "anyone"}
    dm = SurveyDataModule(None, ["mixed.json"], {"valid": "V"}, None, None, ["V"], root=str(tmp_path),
                          country_pattern="How would .+? from (?P<country>.+?) answer", population_wording=wording)
    dm.load_rows()
    assert dm.rows["V"][0].instruction == rows[0]["instruction"]  # byte for byte, odd spacing included
    assert dm.rows["V"][1].instruction == "a woman aged 30 to 49 of Andorra: "
    with pytest.raises(ValueError, match="unknown field.*'templat'"):
        as_wording({"templat": "x"})
    with pytest.raises(ValueError, match=r"placeholders \{population\} and \{country\}"):
        as_wording({"template": "How would {person} from {country}"})
    with pytest.raises(ValueError, match="_target_ must be simlab.data.populations.PopulationWording"):
        as_wording({"_target_": "os.system", "template": "x"})
    bad = SurveyDataModule(None, ["mixed.json"], {"valid": "V"}, None, None, ["V"], root=str(tmp_path),
                           country_pattern="How would .+? from (?P<country>.+?) answer",
                           population_wording={"subjects": {"sex": {"male": "a man"}}})
    with pytest.raises(ValueError, match=r"mixed.json: row 1: field 'population': .*sex='female'"):
        bad.load_rows()


def test_question_first_puts_the_population_after_the_options(population_root, tiny_tokenizer):
    dm = load(population_root, "model.prompt_order=question_first", "model.prompt_style=plain", "data.max_length=2048",
              tokenizer=tiny_tokenizer)
    dm.setup()
    row = dm.rows["C1-Q2"][1]
    text = dm.prompt.render(row, tiny_tokenizer)
    assert text == (row.question + ", ".join(row.options) + "\n\nHow would a man aged 50 or older from Andorra "
                    "answer the following question: If had to select one of the options, my answer would be (")
    groups = {e.prefix_group for e in dm.datasets["C1-Q1"].encoded}
    assert len(groups) == 2  # one prefix group per question: every subgroup of every country shares it


def test_attribute_control_names_another_subgroup_of_the_same_attributes(population_root):
    plain, ctrl = load(population_root), load(population_root, "method=zs_attribute_ctrl")
    assert ctrl.settings["attribute_control"] is True and "attribute_control" not in plain.settings
    drawn = set()
    for subset, rows in ctrl.rows.items():
        for row, source in zip(rows, plain.rows[subset]):
            assert row.target == source.target and row.population_key == source.population_key
            assert row.prompt_attributes in SUBGROUPS and row.prompt_attributes != row.attributes
            assert row.prompt_country is None
            assert row.instruction == PopulationWording().instruction(
                type(row.population)(row.country, row.prompt_attributes))
            drawn.add(row.prompt_attributes)
    assert drawn == set(SUBGROUPS)
    again = load(population_root, "method=zs_attribute_ctrl", "data.test_subsets=[C3-Q3]", "data.valid_subset=null",
                 "data.train_subset=null")
    assert [r.instruction for r in again.rows["C3-Q3"]] == [r.instruction for r in ctrl.rows["C3-Q3"]]  # per row


def test_attribute_control_draws_with_the_seed_and_among_same_named_subgroups(population_root, tmp_path):
    row = load(population_root).rows["C1-Q1"][0]
    bands = [(("sex", sex), ("age", age)) for sex in ("female", "male") for age in ("16-29", "30-49", "50+")]
    pool = [*bands, (("sex", "female"),), (("age", "30-49"),)]
    draws = [replace_attributes(row, pool, seed, PopulationWording()).prompt_attributes for seed in range(40)]
    assert set(draws) == set(bands) - {row.attributes}  # every other (sex, age) subgroup, never its own or a sex alone
    assert draws == [replace_attributes(row, pool, seed, PopulationWording()).prompt_attributes for seed in range(40)]
    rows = population_rows()[:4]
    rows += [{**rows[0], "population": {"country": "Andorra", "sex": "male"},
              "instruction": "How would a man from Andorra answer the following question:\n\n"}]
    write_rows(tmp_path / "odd.json", rows)
    dm = SurveyDataModule(None, ["odd.json"], {"train": "T"}, None, None, ["T"], root=str(tmp_path),
                          country_pattern="How would .+? from (?P<country>.+?) answer", attribute_control=True)
    with pytest.raises(ValueError, match=r"row 4 \(Andorra \| sex=male\).*another subgroup with the attributes "
                                         r"\['sex'\]"):
        dm.load_rows()


def test_attribute_control_needs_subgroup_rows(tmp_path):
    write_rows(tmp_path / "countries.json", [paper_row()])
    dm = SurveyDataModule(None, ["countries.json"], {"valid": "V"}, None, None, ["V"], root=str(tmp_path),
                          attribute_control=True)
    with pytest.raises(ValueError, match="attribute_control=true needs subgroup rows.*whole countries only"):
        dm.load_rows()


def test_country_control_on_subgroup_rows_keeps_the_subgroup(population_root):
    ctrl = load(population_root, "method=zs_ctrl")
    countries = {"Andorra", "Brazil", "Kenya", "Japan"}  # the [ctrl] pool stays countries
    for row in ctrl.rows["C2-Q1"]:
        assert row.prompt_country in countries - {row.country} and row.prompt_attributes is None
        assert row.instruction == PopulationWording().instruction(type(row.population)(row.prompt_country,
                                                                                        row.attributes))
    both = load(population_root, "method=zs_ctrl", "data.attribute_control=true")
    for row, only_country in zip(both.rows["C2-Q1"], ctrl.rows["C2-Q1"]):
        assert row.prompt_country == only_country.prompt_country  # the two draws are independent
        assert row.prompt_attributes != row.attributes
        assert row.instruction == PopulationWording().instruction(type(row.population)(row.prompt_country,
                                                                                        row.prompt_attributes))


class RecordingPrior:
    """A prior that records what it is asked (the population the prompt names, the countries excluded)."""

    def __init__(self):
        self.asked = []

    def prior(self, row, exclude=()):
        import numpy as np

        self.asked.append((row.country, row.attributes, tuple(exclude)))
        return np.full(len(row.options), 1 / len(row.options))


def test_under_attribute_control_the_prior_is_the_prompt_subgroups(population_root, tiny_tokenizer):
    dm = load(population_root, "method=zs_attribute_ctrl", "data.max_length=2048", "data.test_subsets=[C2-Q1]",
              "data.train_subset=null", "data.valid_subset=null", tokenizer=tiny_tokenizer)
    prior = RecordingPrior()
    dm.set_prior(prior)
    dm.setup()
    assert prior.asked == [(r.country, r.prompt_attributes, (r.country,)) for r in dm.rows["C2-Q1"]]


def test_predictions_and_tables_show_the_population(population_root):
    ctrl = load(population_root, "method=zs_attribute_ctrl")
    rows = {"C2-Q1": ctrl.rows["C2-Q1"]}
    records = list(prediction_records(rows, {"C2-Q1": [list(r.target) for r in rows["C2-Q1"]]}))
    assert records[0]["population"] == {"country": "Kenya", "sex": "female", "age": "30-49"}
    assert records[0]["prompt_population"] == {"country": "Kenya", "sex": "male", "age": "50+"}
    assert "prompt_country" not in records[0]
    plain = list(prediction_records({"V": load(population_root).rows["C1-Q2"]}, {"V": [[0.5] * 3] * 4}))
    assert "prompt_population" not in plain[0] and plain[1]["population"]["sex"] == "male"
    frame = rows_table(ctrl.rows["C2-Q1"])
    at = LONG_COLUMNS.index("country") + 1
    assert list(frame.columns) == [*LONG_COLUMNS[:at], "sex", "age", *LONG_COLUMNS[at:], "n_eff"]
    assert set(frame.sex) == {"female", "male"} and set(frame.n_eff) == {80.5, 81.5}
    wide = rows_table(ctrl.rows["C2-Q1"], format="wide")
    assert list(wide.columns) == [*WIDE_COLUMNS[:at], "sex", "age", *WIDE_COLUMNS[at:], "n_eff"]
    assert json.loads(wide.to_json(orient="records"))[1]["age"] == "50+"


def test_wandb_predictions_table_and_per_country_breakdown_show_the_population(population_root):
    from simlab.report.breakdown import per_country
    from simlab.report.wandb_logging import prediction_rows

    ctrl = load(population_root, "method=zs_attribute_ctrl")
    rows = {"C2-Q1": ctrl.rows["C2-Q1"]}
    predictions = {"C2-Q1": [[1 / len(r.options)] * len(r.options) for r in rows["C2-Q1"]]}
    columns, table = prediction_rows(rows, predictions)
    record = dict(zip(columns, table[0]))
    assert record["country"] == "Kenya" and record["population"] == "sex=female, age=30-49"
    assert record["prompt_population"] == "Kenya | sex=male, age=50+"
    breakdown = per_country(list(prediction_records(rows, predictions)), "C2-Q1")
    assert list(breakdown) == ["Kenya | sex=female, age=30-49", "Kenya | sex=male, age=50+"]
    assert all(v["n"] == 2 for v in breakdown.values())


@pytest.mark.parametrize("control", [[], ["method=zs_attribute_ctrl", "data.country_control=true"]])
def test_shared_prefix_is_exact_on_subgroup_rows(population_root, tiny_tokenizer, tiny_llama_dir, control):
    from test_shared_prefix import assert_same, lora_model, scores

    from simlab.data.batching import PadCollator, SharedPrefixCollator

    dm = load(population_root, "model.prompt_order=question_first", "model.prompt_style=chat", "data.max_length=2048",
              *control, tokenizer=tiny_tokenizer)
    dm.setup()
    assert all((row.prompt_attributes is not None) == bool(control) for row in dm.rows["C2-Q1"])
    items = list(enumerate(dm.datasets["C2-Q1"].encoded + dm.datasets["C3-Q1"].encoded))  # 2 questions, 8 rows
    shared = SharedPrefixCollator(tiny_tokenizer.pad_token_id, 0.0, pack_max_tokens=0)(items)
    assert len(shared["prefix_lengths"]) == 2  # one shared prefix per question, across countries and subgroups
    packed = SharedPrefixCollator(tiny_tokenizer.pad_token_id, 0.0, pack_max_tokens=10**6)(items)
    assert int(packed["packed_group"].max()) == 1  # the same two prefixes, in one packed sequence
    model = lora_model(tiny_llama_dir)
    model.eval()
    expected = scores(model, PadCollator(tiny_tokenizer.pad_token_id)(items))
    assert_same(expected, scores(model, shared))
    assert_same(expected, scores(model, packed))
