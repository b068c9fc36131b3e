"""The prior-anchored simulator's priors: leave-one-country-out means, survey-keyed questions, similarity weights."""

import numpy as np
import pytest

from simlab.data.rows import SurveyRow
from simlab.data.transforms import shuffle_options
from simlab.simulator.prior import SurveyPrior, fit_temperature, permuted


def make_row(country, target, question="1", survey="wvs7", letters=("A", "B", "C"), index=0):
    options = tuple(f"({l})opt{l}" for l in letters)
    return SurveyRow(subset="T", question_id=question, country=country, instruction=f"How would someone from {country} "
                     "answer the following question:\n\n", question="Q? \nHere are the options: \n", options=options,
                     letters=letters, target=tuple(target), n=None, source="rows.json", index=index, survey=survey)


TRAIN = [make_row("A", [1.0, 0.0, 0.0]), make_row("B", [0.0, 1.0, 0.0]), make_row("C", [0.0, 0.0, 1.0])]


def test_leave_one_out_prior_never_includes_the_rows_own_country():
    prior = SurveyPrior(TRAIN, smoothing=0.0)
    assert prior.prior(TRAIN[0]) == pytest.approx([0.0, 0.5, 0.5])  # A's prior: B and C only
    assert prior.prior(make_row("Z", [0.2, 0.3, 0.5])) == pytest.approx([1 / 3] * 3)  # a new country: all three
    assert prior.prior(TRAIN[0], exclude=("B",)) == pytest.approx([0.0, 0.0, 1.0])  # [ctrl]: the real country too
    smoothed = SurveyPrior(TRAIN, smoothing=0.03).prior(TRAIN[0])
    assert smoothed == pytest.approx([0.01, 0.495, 0.495])  # no option is impossible


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
    embeddings = {"A": np.array([1.0, 0.0]), "B": np.array([0.9, 0.1]), "C": np.array([0.0, 1.0]),
                  "Z": np.array([1.0, 0.05])}
    prior = SurveyPrior(TRAIN, embeddings, temperature=0.05)
    z = prior.prior(make_row("Z", [1.0, 0.0, 0.0]))
    assert z[0] > z[1] > z[2] and z.sum() == pytest.approx(1.0)
    # rows where close countries answer alike: a small temperature wins over equal weights
    rows = [make_row("A", [0.9, 0.1, 0.0]), make_row("B", [0.8, 0.2, 0.0]), make_row("C", [0.0, 0.1, 0.9])]
    best, scores = fit_temperature(rows, embeddings, grid=(0.05, 1.0))
    assert best == 0.05 and scores[0.05] > scores[float("inf")]


def test_a_shuffled_rows_prior_follows_its_displayed_options():
    row = make_row("Z", [0.2, 0.3, 0.5])
    prior = SurveyPrior(TRAIN[:2], smoothing=0.0).prior(row)  # [0.5, 0.5, 0.0]
    shuffled = shuffle_options(row, seed=3)
    moved = permuted(prior, shuffled.option_order)
    assert [moved[i] for i in range(3)] == [prior[j] for j in shuffled.option_order]
    assert list(shuffled.target) == pytest.approx([row.target[j] for j in shuffled.option_order])


def test_the_position_prior_answers_an_unseen_question_with_the_countrys_response_style():
    rows = [make_row("A", [0.6, 0.3, 0.1]), make_row("A", [0.8, 0.1, 0.1], question="2", index=1),
            make_row("B", [0.1, 0.3, 0.6])]
    unseen = make_row("A", [0.5, 0.5, 0.0], question="9")
    assert SurveyPrior(rows).prior(unseen) == pytest.approx([1 / 3] * 3)  # fallback uniform
    # A's mean [0.7, .2, .1] and B's [.1, .3, .6]
    equal = SurveyPrior(rows, fallback="position", smoothing=0.0).prior(unseen)
    assert equal == pytest.approx([0.4, 0.25, 0.35])
    close = SurveyPrior(rows, {"A": np.array([1.0, 0.0]), "B": np.array([0.0, 1.0])}, 0.05, fallback="position",
                        smoothing=0.0)
    assert close.prior(unseen) == pytest.approx([0.7, 0.2, 0.1], abs=1e-6)  # its own answers count most
    assert SurveyPrior(rows, fallback="position").prior(make_row("A", [0.5, 0.5], question="9", letters=("A", "B"))) \
        == pytest.approx([0.5, 0.5])  # no training question with two options: uniform


# ---------------------------------------------------------------------------------------------- in batches
def test_batches_carry_the_log_prior_and_uniform_prior_equals_no_prior(tmp_path, tiny_tokenizer, tiny_llama_dir):
    """q ∝ prior · exp(logits): under a uniform prior the simulator's distribution is the plain model's."""
    import torch
    from conftest import paper_row, write_rows
    from transformers import AutoModelForCausalLM

    from simlab.data import SurveyDataModule
    from simlab.metrics.divergences import masked_softmax
    from simlab.model.scoring import option_logits, simulator_logits

    rows = [paper_row(data_type="train", instruction=f"How would someone from {c} answer the following question:\n\n",
                      options_dist=d)
            for c, d in (("Andorra", {"A": 60.0, "B": 30.0, "C": 10.0}), ("Chile", {"A": 10.0, "B": 30.0, "C": 60.0}))]
    rows.append(paper_row(id="999"))  # a valid row of a question nobody trained on: uniform prior
    write_rows(tmp_path / "rows.json", rows)
    dm = SurveyDataModule(tiny_tokenizer, ["rows.json"], {"train": "T", "valid": "V"}, "T", "V", ["V", "T"],
                          root=str(tmp_path), max_length=2048, prior_subset="T")
    dm.load_rows()
    dm.set_prior(SurveyPrior(dm.prior_rows, smoothing=0.0))
    dm.setup()
    train = next(iter(dm.train_dataloader()))
    andorra = train["row_index"].tolist().index(0)
    assert train["log_prior"][andorra].exp().tolist() == pytest.approx([0.1, 0.3, 0.6])  # Chile's answers only
    batch = next(iter(dm.test_dataloader()[0]))
    assert batch["log_prior"].exp()[0].tolist() == pytest.approx([1 / 3] * 3)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    with torch.no_grad():
        plain = masked_softmax(option_logits(model, batch), batch["option_mask"])
        anchored = masked_softmax(simulator_logits(model, batch), batch["option_mask"])
    assert torch.allclose(plain, anchored, atol=1e-6)


def test_under_ctrl_the_prior_is_the_prompt_countrys_and_never_the_targets(tmp_path, tiny_tokenizer):
    from conftest import paper_row, write_rows

    from simlab.data import SurveyDataModule

    countries = {"Andorra": [100.0, 0.0, 0.0], "Chile": [0.0, 100.0, 0.0], "Peru": [0.0, 0.0, 100.0]}
    rows = [paper_row(data_type="train", instruction=f"How would someone from {c} answer the following question:\n\n",
                      options_dist=dict(zip("ABC", d))) for c, d in countries.items()]
    write_rows(tmp_path / "rows.json", rows + [paper_row(id="999")])
    dm = SurveyDataModule(tiny_tokenizer, ["rows.json"], {"train": "T", "valid": "V"}, "T", "V", ["V"],
                          root=str(tmp_path), max_length=2048, prior_subset="T", country_control=True)
    dm.load_rows()
    dm.set_prior(SurveyPrior(dm.prior_rows, smoothing=0.0))
    for row, source in zip(dm.rows["T"], dm.source_rows["T"]):
        shares = np.exp(dm.log_prior(row, source))
        real = list("ABC")[[c for c in countries].index(row.country)]
        assert shares["ABC".index(real)] == pytest.approx(0.0)  # the real country's own answer is never the prior
        assert shares.sum() == pytest.approx(1.0) and row.prompt_country != row.country
