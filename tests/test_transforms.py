"""[ctrl] country replacement and option shuffling: seeded, never the real country, target permuted."""

import re

import pytest
from conftest import paper_row, write_rows

from simlab.data import SurveyDataModule
from simlab.data.rows import ENGLISH_COUNTRY_PATTERN, parse_row
from simlab.data.transforms import replace_country, shuffle_options

COUNTRIES = ["Andorra", "Brazil", "Chile", "Denmark", "Egypt"]


def _row(index=0, **changes):
    return parse_row(paper_row(**changes), path="f.json", index=index, subset_names={"valid": "V"},
                     country_pattern=re.compile(ENGLISH_COUNTRY_PATTERN))


def test_replace_country_never_keeps_the_real_country_and_is_seeded():
    drawn = set()
    for index in range(40):
        row = _row(index)
        ctrl = replace_country(row, COUNTRIES, seed=0, country_pattern=ENGLISH_COUNTRY_PATTERN)
        assert ctrl.prompt_country != "Andorra" and ctrl.prompt_country in COUNTRIES
        assert ctrl.instruction == f"How would someone from {ctrl.prompt_country} answer the following question:\n\n"
        assert ctrl.country == "Andorra" and ctrl.target == row.target
        assert replace_country(row, COUNTRIES, 0, ENGLISH_COUNTRY_PATTERN) == ctrl  # same seed, same draw
        drawn.add(ctrl.prompt_country)
    assert drawn == set(COUNTRIES) - {"Andorra"}  # every other country gets drawn
    with pytest.raises(ValueError, match="at least one other country"):
        replace_country(_row(), ["Andorra"], 0, ENGLISH_COUNTRY_PATTERN)


def test_shuffle_options_relabels_and_permutes_the_target():
    row = _row(options=["(X)Hard to say", "(A)Yes", "(B)No", "(C)Maybe"],
               options_dist={"X": 10.0, "A": 20.0, "B": 30.0, "C": 40.0})
    seen_orders = set()
    for seed in range(12):
        shuffled = shuffle_options(row, seed)
        assert shuffled.letters == ("A", "B", "C", "D")
        assert [o[:3] for o in shuffled.options] == ["(A)", "(B)", "(C)", "(D)"]
        for new_position, old_position in enumerate(shuffled.option_order):
            assert shuffled.options[new_position][3:] == row.options[old_position][3:]
            assert shuffled.target[new_position] == row.target[old_position]
        assert shuffle_options(row, seed) == shuffled
        seen_orders.add(shuffled.option_order)
    assert len(seen_orders) > 3


def test_datamodule_applies_settings_and_predictions_record_them(tmp_path, tiny_tokenizer):
    rows = [paper_row(id=str(i), instruction=f"How would someone from {c} answer the following question:\n\n")
            for i, c in enumerate(COUNTRIES)]
    write_rows(tmp_path / "rows.json", rows)
    dm = SurveyDataModule(tiny_tokenizer, ["rows.json"], {"valid": "V"}, None, None, ["V"], root=str(tmp_path),
                          country_control=True, shuffle_options=True, seed=3)
    dm.setup()
    assert dm.settings == {"country_control": True, "shuffle_options": True, "seed": 3, "prompt_order": "paper"}
    for row in dm.rows["V"]:
        assert row.prompt_country in COUNTRIES and row.prompt_country != row.country
        assert f"someone from {row.prompt_country} answer" in tiny_tokenizer.decode(dm.encode(row).input_ids)
        assert row.option_order is not None


def test_cyclic_option_orders_are_averaged_back_onto_the_right_options(tmp_path, tiny_tokenizer):
    """Each test row is asked once per cyclic shift; merging maps every answer back to its option before averaging."""
    import numpy as np
    from conftest import paper_row, write_rows

    from simlab.data import SurveyDataModule

    write_rows(tmp_path / "rows.json",
               [paper_row(), paper_row(id="165", options=["(A)x", "(B)y"], options_dist={"A": 40, "B": 60})])
    dm = SurveyDataModule(tiny_tokenizer, ["rows.json"], {"valid": "V"}, None, None, ["V"], root=str(tmp_path),
                          max_length=2048, test_option_orders="cyclic")
    dm.setup()
    assert len(dm.test_datasets["V"]) == 3 + 2 and len(dm.datasets["V"]) == 2
    # a "model" that puts 0.7 on whatever option is shown first: a pure letter-position bias
    items = []
    for _row, order in dm.test_variants["V"]:
        k = len(order)
        items.append([0.7] + [0.3 / (k - 1)] * (k - 1))
    merged = dm.merge_option_orders({"V": items})["V"]
    assert merged[0] == [1 / 3] * 3 or np.allclose(merged[0], [1 / 3] * 3)  # the bias cancels out
    assert np.allclose(merged[1], [0.5, 0.5])
    # an option-content "model" (it knows option y is popular) keeps its answer through every order
    items = []
    for row, order in dm.test_variants["V"]:
        shown = [dm.rows["V"][row].options[i] for i in order]
        items.append([0.9 if "y" in o else 0.1 for o in shown] if len(order) == 2 else [1 / 3] * 3)
    assert np.allclose(dm.merge_option_orders({"V": items})["V"][1], [0.1, 0.9])
    # the shifted items' targets are the row's target in the shown order
    encoded = dm.test_datasets["V"].encoded
    row, order = dm.test_variants["V"][4]
    assert encoded[4].target == [list(dm.rows["V"][row].target)[i] for i in order]


def test_cyclic_option_orders_ask_the_relabelled_letters_of_rows_lettered_with_gaps(tmp_path, tiny_tokenizer):
    """A row lettered A, B, D (a skipped option code) is shown as A, B, C when rotated: C must be a known letter."""
    from conftest import paper_row, write_rows

    from simlab.data import SurveyDataModule

    write_rows(tmp_path / "rows.json", [paper_row(id="165", options=["(A)x", "(B)y", "(D)z"],
                                                  options_dist={"A": 20, "B": 30, "D": 50})])
    dm = SurveyDataModule(tiny_tokenizer, ["rows.json"], {"valid": "V"}, None, None, ["V"], root=str(tmp_path),
                          max_length=2048, test_option_orders="cyclic")
    dm.setup()
    assert {"A", "B", "C", "D"} <= set(dm.letter_ids)
    shown = [dm.test_datasets["V"].encoded[i] for i in range(3)]
    assert [item.letter_ids for item in shown] == [[dm.letter_ids[c] for c in "ABC"]] * 3
    assert shown[1].target == [0.3, 0.5, 0.2]
