"""Populations: keys, prompt wording, and the population fields of a survey row (population, n_eff,
country_shares), each bad value a located RowError."""

from __future__ import annotations

import re

import pytest
from conftest import paper_row

from simlab.data.populations import Population, PopulationWording, ordered_attributes, population_key
from simlab.data.prompts import PAPER_INSTRUCTION
from simlab.data.rows import RowError, parse_row
from simlab.data.selection import check_unique_cells

POPULATION_PATTERN = "How would .+? from (?P<country>.+?) answer the following question"
SUBSETS = {"valid": "C1-Q2"}


def _parse(raw, pattern=POPULATION_PATTERN, index=0):
    return parse_row(raw, path="pop.json", index=index, subset_names=SUBSETS, country_pattern=re.compile(pattern))


def _population_row(**changes):
    row = paper_row(instruction="How would a woman aged 30 to 49 from Andorra answer the following question:\n\n",
                    population={"country": "Andorra", "sex": "female", "age": "30-49"}, n=120, n_eff=97.5)
    row.update(changes)
    return row


def test_a_whole_country_is_the_paper_prompt_and_keyed_by_its_name():
    wording = PopulationWording()
    assert wording.instruction(Population("Kenya")) == PAPER_INSTRUCTION.format(country="Kenya")
    assert population_key("Kenya") == "Kenya"


def test_attributes_are_ordered_and_worded():
    population = Population.from_mapping({"age": "50+", "country": "Kenya", "sex": "male"})
    assert population.attributes == (("sex", "male"), ("age", "50+"))
    assert population.key == "Kenya | sex=male, age=50+"
    wording = PopulationWording()
    expected = "How would a man aged 50 or older from Kenya answer the following question:\n\n"
    assert wording.instruction(population) == expected
    assert wording.describe((("age", "16-29"),)) == "someone aged 16 to 29"
    assert wording.describe((("sex", "female"), ("education", "higher"))) == "a woman with tertiary education"
    assert wording.describe((("age", "18-24"),)) == "someone aged 18 to 24"  # a custom band


def test_unknown_attribute_or_value_is_an_error_naming_it():
    with pytest.raises(ValueError, match="religion"):
        ordered_attributes({"religion": "x"})
    with pytest.raises(ValueError, match="sex='other'"):
        PopulationWording().describe((("sex", "other"),))


def test_population_row_parses_with_effective_size_and_country_shares():
    row = _parse(_population_row(country_shares={"A": 40, "B": 40, "C": 20}))
    assert row.country == "Andorra"
    assert row.attributes == (("sex", "female"), ("age", "30-49"))
    assert row.population_key == "Andorra | sex=female, age=30-49"
    assert row.n == 120 and row.n_eff == 97.5 and row.sample_size == 97.5
    assert row.country_target == pytest.approx((0.4, 0.4, 0.2))


def test_a_country_row_has_no_population_fields():
    row = _parse(paper_row(n=10), pattern=POPULATION_PATTERN)
    assert row.attributes == () and row.population_key == "Andorra" and row.n_eff is None and row.sample_size == 10


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"population": {"country": "Kenya", "sex": "female"}}, "population", "differs from the instruction's"),
    ({"population": {"sex": "female"}}, "population", "non-empty 'country'"),
    ({"population": {"country": "Andorra", "colour": "red"}}, "population", "unknown population attribute"),
    ({"n_eff": 0}, "n_eff", "positive finite"),
    ({"n_eff": 121}, "n_eff", "exceeds n=120"),
    ({"n_eff": float("nan")}, "n_eff", "positive finite"),
    ({"country_shares": {"A": 50, "B": 50}}, "country_shares", "missing"),
    ({"country_shares": {"A": 50, "B": 50, "C": -1}}, "country_shares", "negative"),
])
def test_bad_population_fields_name_the_field(changes, field, message):
    with pytest.raises(RowError, match=message) as caught:
        _parse(_population_row(**changes), index=7)
    assert caught.value.field_name == field and caught.value.index == 7


def test_subgroups_of_one_country_are_distinct_cells_but_a_repeat_is_not():
    female = _parse(_population_row(), index=0)
    male = _parse(_population_row(
        instruction="How would a man aged 30 to 49 from Andorra answer the following question:\n\n",
        population={"country": "Andorra", "sex": "male", "age": "30-49"}), index=1)
    check_unique_cells("C1-Q2", [female, male])
    with pytest.raises(RowError, match="population 'Andorra | sex=female, age=30-49'"):
        check_unique_cells("C1-Q2", [female, male, _parse(_population_row(), index=2)])


def test_cell_sampling_keeps_every_subgroup_of_a_drawn_cell_together():
    from simlab.data.selection import sample_rows

    rows = []
    for country in ["Andorra", "Chile", "Kenya", "Peru"]:
        for q in ("1", "2", "3"):
            for sex in ("female", "male"):
                rows.append(_parse(_population_row(
                    id=q, instruction=f"How would someone from {country} answer the following question:\n\n",
                    population={"country": country, "sex": sex}), index=len(rows)))
    sample = sample_rows(rows, 5, seed=0, subset="C1-Q2", unit="cell")
    cells = {(r.country, r.question_id) for r in sample}
    assert len(sample) == 6 and len(cells) == 3  # whole cells until at least 5 rows
    assert [r.index for r in sample] == sorted(r.index for r in sample)  # file order
    assert sample == sample_rows(rows, 5, seed=0, subset="C1-Q2", unit="cell")  # seeded
    assert len(sample_rows(rows, 5, seed=0, subset="C1-Q2")) == 5  # rows by default
    with pytest.raises(ValueError, match="sample_unit"):
        sample_rows(rows, 5, seed=0, subset="C1-Q2", unit="question")
