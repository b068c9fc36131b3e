"""The prior-anchored simulator's priors: leave-one-country-out means, survey-keyed questions, similarity weights."""

import numpy as np
import pytest

from simlab.data.rows import SurveyRow
from simlab.data.settings import shuffle_options
from simlab.priors import SurveyPrior, fit_temperature, permuted


def make_row(country, target, question="1", survey="wvs7", letters=("A", "B", "C"), index=0):
    options = tuple(f"({l})opt{l}" for l in letters)
    return SurveyRow(subset="T", question_id=question, country=country, instruction=f"How would someone from {country} "
                     "answer the following question:\n\n", question="Q? \nHere are the options: \n", options=options,
                     letters=letters, target=tuple(target), n=None, source="rows.json", index=index, survey=survey)


TRAIN = [make_row("A", [1.0, 0.0, 0.0]), make_row("B", [0.0, 1.0, 0.0]), make_row("C", [0.0, 0.0, 1.0])]


def test_leave_one_out_prior_never_includes_the_rows_own_country():
    prior = SurveyPrior(TRAIN)
    assert prior.prior(TRAIN[0]) == pytest.approx([0.0, 0.5, 0.5])  # A's prior: B and C only
    assert prior.prior(make_row("Z", [0.2, 0.3, 0.5])) == pytest.approx([1 / 3] * 3)  # a new country: all three


def test_a_question_without_other_answers_gets_the_uniform_prior():
    prior = SurveyPrior(TRAIN[:1])
    assert prior.prior(TRAIN[0]) == pytest.approx([1 / 3] * 3) and not prior.covers(TRAIN[0])
    assert prior.prior(make_row("A", [0.5, 0.5], question="2", letters=("A", "B"))) == pytest.approx([0.5, 0.5])


def test_a_pew_row_whose_id_equals_a_wvs_question_gets_no_wvs_prior():
    prior = SurveyPrior(TRAIN)
    pew = make_row("Z", [0.1, 0.2, 0.7], survey="pew")
    assert not prior.covers(pew) and prior.prior(pew) == pytest.approx([1 / 3] * 3)
    other_letters = make_row("Z", [0.5, 0.5], letters=("A", "B"))  # the same id with other options: not the question
    assert not prior.covers(other_letters)


def test_similarity_weights_favour_close_countries_and_temperature_is_fitted_on_the_rows():
    embeddings = {"A": np.array([1.0, 0.0]), "B": np.array([0.9, 0.1]), "C": np.array([0.0, 1.0]), "Z": np.array([1.0, 0.05])}
    prior = SurveyPrior(TRAIN, embeddings, temperature=0.05)
    z = prior.prior(make_row("Z", [1.0, 0.0, 0.0]))
    assert z[0] > z[1] > z[2] and z.sum() == pytest.approx(1.0)
    # rows where close countries answer alike: a small temperature wins over equal weights
    rows = [make_row("A", [0.9, 0.1, 0.0]), make_row("B", [0.8, 0.2, 0.0]), make_row("C", [0.0, 0.1, 0.9])]
    best, scores = fit_temperature(rows, embeddings, grid=(0.05, 1.0))
    assert best == 0.05 and scores[0.05] > scores[float("inf")]


def test_a_shuffled_rows_prior_follows_its_displayed_options():
    row = make_row("Z", [0.2, 0.3, 0.5])
    prior = SurveyPrior(TRAIN[:2]).prior(row)  # [0.5, 0.5, 0.0]
    shuffled = shuffle_options(row, seed=3)
    moved = permuted(prior, shuffled.option_order)
    assert [moved[i] for i in range(3)] == [prior[j] for j in shuffled.option_order]
    assert list(shuffled.target) == pytest.approx([row.target[j] for j in shuffled.option_order])


def test_the_position_prior_answers_an_unseen_question_with_the_countrys_response_style():
    rows = [make_row("A", [0.6, 0.3, 0.1]), make_row("A", [0.8, 0.1, 0.1], question="2", index=1),
            make_row("B", [0.1, 0.3, 0.6])]
    unseen = make_row("A", [0.5, 0.5, 0.0], question="9")
    assert SurveyPrior(rows).prior(unseen) == pytest.approx([1 / 3] * 3)  # fallback uniform
    equal = SurveyPrior(rows, fallback="position").prior(unseen)  # A's mean [0.7, .2, .1] and B's [.1, .3, .6]
    assert equal == pytest.approx([0.4, 0.25, 0.35])
    close = SurveyPrior(rows, {"A": np.array([1.0, 0.0]), "B": np.array([0.0, 1.0])}, 0.05, fallback="position")
    assert close.prior(unseen) == pytest.approx([0.7, 0.2, 0.1], abs=1e-6)  # its own answers count most
    assert SurveyPrior(rows, fallback="position").prior(make_row("A", [0.5, 0.5], question="9", letters=("A", "B"))) \
        == pytest.approx([0.5, 0.5])  # no training question with two options: uniform
