"""Baselines and priors of populations (issue 22) on a hand-made case: three training countries (X, Y, Z) x two
subgroups (women, men) of one two-option question, every prediction computed by hand; the breakdown use never
reads a row's own shares; whole-country rows keep today's predictions."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest

from simlab.baselines import (
    AvgCultureBaseline,
    CountrySharesBaseline,
    SubgroupShiftBaseline,
    SurveyPriorBaseline,
    UniformBaseline,
)
from simlab.data.rows import SurveyRow, read_rows
from simlab.metrics.registry import one_minus_jsd
from simlab.simulator.breakdown import BreakdownPrior, SubgroupShift, choose_eps
from simlab.simulator.prior import SurveyPrior, build_prior

WOMEN, MEN = (("sex", "female"),), (("sex", "male"),)
# country -> (its overall shares, women's shares, men's shares) on question "1" (options A, B)
SHARES = {
    "X": ((0.5, 0.5), (0.6, 0.4), (0.4, 0.6)),
    "Y": ((0.8, 0.2), (0.9, 0.1), (0.7, 0.3)),
    "Z": ((0.3, 0.7), (0.2, 0.8), (0.4, 0.6)),
}
EPS = 0.01


def make_row(country, target, attributes=(), country_target=None, question="1", subset="C1-Q1", index=0):
    letters = ("A", "B")
    return SurveyRow(
        subset=subset, question_id=question, country=country,
        instruction=f"How would someone from {country} answer the following question:\n\n", question="Q?",
        options=tuple(f"({l})opt{l}" for l in letters), letters=letters, target=tuple(target), n=100,
        source="rows.json", index=index, attributes=attributes,
        country_target=tuple(country_target) if country_target is not None else None)


def training_rows():
    rows = []
    for country, (overall, women, men) in SHARES.items():
        rows.append(make_row(country, women, WOMEN, overall, index=len(rows)))
        rows.append(make_row(country, men, MEN, overall, index=len(rows)))
    return rows


TRAIN = training_rows()
W_OVERALL = (0.6, 0.4)  # the new country W's overall shares (known in the breakdown use)
W_WOMEN = make_row("W", (0.7, 0.3), WOMEN, W_OVERALL, subset="C2-Q1", index=10)
W_MEN = make_row("W", (0.5, 0.5), MEN, W_OVERALL, subset="C2-Q1", index=11)


def women_shift(countries):
    """By hand: the mean over ``countries`` of log(p_women + eps) - log(p_country + eps), per option."""
    return [sum(math.log(SHARES[c][1][i] + EPS) - math.log(SHARES[c][0][i] + EPS) for c in countries) / len(countries)
            for i in range(2)]


def moved(overall, shift):
    raw = [overall[i] * math.exp(shift[i]) for i in range(2)]
    return [v / sum(raw) for v in raw]


# ------------------------------------------------------------------------------------------ new-country use
def test_uniform_is_one_over_k_for_a_subgroup():
    assert UniformBaseline().fit(TRAIN).predict([W_WOMEN]) == [[0.5, 0.5]]


def test_avg_culture_is_the_same_subgroups_mean_over_the_training_countries_never_the_rows_own():
    baseline = AvgCultureBaseline().fit(TRAIN)
    women, men = baseline.predict([W_WOMEN, W_MEN])
    assert women == pytest.approx([(0.6 + 0.9 + 0.2) / 3, (0.4 + 0.1 + 0.8) / 3])  # 0.5667, 0.4333
    assert men == pytest.approx([(0.4 + 0.7 + 0.4) / 3, (0.6 + 0.3 + 0.6) / 3])  # 0.5, 0.5
    x_women = baseline.predict([TRAIN[0]])[0]  # a training row: Y and Z only
    assert x_women == pytest.approx([(0.9 + 0.2) / 2, (0.1 + 0.8) / 2])
    other_group = make_row("W", (0.5, 0.5), (("sex", "female"), ("age", "16-29")), subset="C2-Q1")
    assert baseline.predict([other_group])[0] == [0.5, 0.5]  # a subgroup never seen in training
    report = baseline.report()
    assert (report["seen"], report["unseen_subgroup"], report["unseen"]) == (4, 1, 0)


def test_population_survey_prior_is_the_same_subgroup_in_other_countries_weighted_by_country_similarity():
    equal = SurveyPrior(TRAIN, smoothing=0.0)
    assert equal.prior(W_WOMEN) == pytest.approx([17 / 30, 13 / 30])
    assert equal.prior(TRAIN[0]) == pytest.approx([0.55, 0.45])  # X's women: Y's and Z's women only
    assert equal.prior(TRAIN[1]) == pytest.approx([0.55, 0.45])  # X's men: Y's (0.7) and Z's (0.4) men
    embeddings = {"X": np.array([1.0, 0.0]), "Y": np.array([0.0, 1.0]), "Z": np.array([1.0, 1.0]),
                  "W": np.array([1.0, 0.0])}
    similar = SurveyPrior(TRAIN, embeddings, temperature=1.0, smoothing=0.0)
    weights = [math.exp(1.0), math.exp(0.0), math.exp(1 / math.sqrt(2))]  # cos(W, X), cos(W, Y), cos(W, Z)
    women_a = sum(w * s for w, s in zip(weights, (0.6, 0.9, 0.2))) / sum(weights)
    assert similar.prior(W_WOMEN) == pytest.approx([women_a, 1 - women_a])  # 0.5110
    baseline = SurveyPriorBaseline(similarity=False, fallback="position", smoothing=0.01).fit(TRAIN)
    assert baseline.predict([W_WOMEN])[0] == pytest.approx([0.99 * 17 / 30 + 0.005, 0.99 * 13 / 30 + 0.005])


def test_the_position_fallback_of_a_subgroup_is_that_subgroups_response_style():
    prior = SurveyPrior(TRAIN, fallback="position", smoothing=0.0)
    unseen = make_row("W", (0.5, 0.5), WOMEN, question="2", subset="C2-Q3")
    assert not prior.covers(unseen)
    assert prior.prior(unseen) == pytest.approx([17 / 30, 13 / 30])  # the women's mean over position, X Y Z


# -------------------------------------------------------------------------------------------- breakdown use
def test_country_shares_is_the_countrys_overall_shares():
    assert CountrySharesBaseline().fit(TRAIN).predict([W_WOMEN, W_MEN]) == [pytest.approx([0.6, 0.4])] * 2


def test_subgroup_shift_moves_the_country_shares_by_the_training_countries_mean_log_ratio():
    baseline = SubgroupShiftBaseline(eps=EPS).fit(TRAIN)
    women, men = baseline.predict([W_WOMEN, W_MEN])
    assert women == pytest.approx(moved(W_OVERALL, women_shift("XYZ")))
    assert women == pytest.approx([0.64988, 0.35012], abs=1e-5)  # shift (-0.0313, -0.2444)
    assert men[0] < 0.6  # men lean to B in X, Y and Z
    x_women = baseline.predict([TRAIN[0]])[0]  # a training row: its own country left out
    assert x_women == pytest.approx(moved(SHARES["X"][0], women_shift("YZ")))
    unseen = make_row("W", (0.9, 0.1), WOMEN, W_OVERALL, question="2", subset="C2-Q3")
    assert baseline.predict([unseen])[0] == pytest.approx([0.6, 0.4])  # never seen: shift 0
    assert baseline.report()["no_shift"] == 1 and baseline.report()["rows"] == 4


def test_the_breakdown_use_never_reads_the_rows_own_shares():
    for model in (CountrySharesBaseline(), SubgroupShiftBaseline(eps=EPS)):
        model.fit(TRAIN)
        changed = dataclasses.replace(W_WOMEN, target=(0.05, 0.95))
        assert model.predict([changed]) == model.predict([W_WOMEN])
    # a training row's prediction is the same whatever its own shares were when the shift was learnt ...
    altered = [dataclasses.replace(TRAIN[0], target=(0.01, 0.99)), *TRAIN[1:]]
    before, after = SubgroupShift(TRAIN, EPS), SubgroupShift(altered, EPS)
    assert after.predict(TRAIN[0]) == pytest.approx(before.predict(TRAIN[0]))
    # ... while another country's prediction does use it
    assert after.predict(TRAIN[2]) != pytest.approx(before.predict(TRAIN[2]))
    prior = BreakdownPrior(TRAIN, eps=EPS, smoothing=0.0)
    assert prior.prior(dataclasses.replace(W_WOMEN, target=(1.0, 0.0))) == pytest.approx(
        moved(W_OVERALL, women_shift("XYZ")))


def test_the_breakdown_prior_is_the_smoothed_subgroup_shift_and_says_what_it_covers():
    prior = build_prior(TRAIN, use="breakdown", eps=EPS, smoothing=0.02)
    assert isinstance(prior, BreakdownPrior) and prior.settings == {"use": "breakdown", "eps": EPS,
                                                                     "smoothing": 0.02}
    expected = moved(W_OVERALL, women_shift("XYZ"))
    assert prior.prior(W_WOMEN) == pytest.approx([0.98 * v + 0.01 for v in expected])
    assert prior.prior(TRAIN[0], exclude=("Y",)) == pytest.approx(
        [0.98 * v + 0.01 for v in moved(SHARES["X"][0], women_shift("Z"))])  # [ctrl]: the real country too
    assert prior.covers(W_WOMEN)
    assert not prior.covers(make_row("W", (0.5, 0.5), WOMEN, W_OVERALL, question="2"))
    with pytest.raises(ValueError, match="similarity does not apply"):
        build_prior(TRAIN, use="breakdown", similarity=True)
    with pytest.raises(ValueError, match="prior.eps is the breakdown prior's"):
        build_prior(TRAIN, eps=0.1)
    with pytest.raises(ValueError, match="prior.use must be"):
        build_prior(TRAIN, use="everything")


def test_a_row_without_country_shares_is_one_line_naming_its_file_and_row(tmp_path):
    raw = [{"id": "1", "instruction": "How would someone from Kenya answer the following question:\n\n",
            "input": "Q?", "options": ["(A)a", "(B)b"], "options_dist": {"A": 60.0, "B": 40.0},
            "data_type": "train", "population": {"country": "Kenya", "sex": "female"}, "n": 100}]
    path = tmp_path / "populations_train.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    rows = read_rows(path, subset_names={"train": "C1-Q1"}).rows
    for make in (lambda: CountrySharesBaseline().predict(rows), lambda: SubgroupShiftBaseline().fit(rows),
                 lambda: build_prior(rows, use="breakdown"), lambda: SubgroupShift(TRAIN).predict(rows[0])):
        with pytest.raises(ValueError) as err:
            make()
        message = str(err.value)
        assert "\n" not in message and f"{path}: row 0 (Kenya | sex=female, question 1): no country_shares" in message


def test_choose_eps_scores_each_eps_leaving_each_rows_country_out():
    best, scores = choose_eps(TRAIN, grid=(0.001, 0.1))
    assert set(scores) == {0.001, 0.1} and best == max(scores, key=scores.get)
    for eps, score in scores.items():
        shift = SubgroupShift(TRAIN, eps)
        by_hand = [float(one_minus_jsd(np.array([shift.predict(r)]), np.array([r.target]))[0]) for r in TRAIN]
        assert score == pytest.approx(sum(by_hand) / len(by_hand))
    with pytest.raises(ValueError, match="must be > 0"):
        SubgroupShift(TRAIN, 0.0)


# ------------------------------------------------------------------------------------------- country rows
def test_whole_country_rows_keep_todays_predictions(shared_data):
    """Fingerprints of avg_culture and the survey prior (equal weights, answer-position fallback, similarity) on
    the shipped WVS country rows of 20 training questions plus 20 questions not in training, computed with the
    code before populations (commit 5a6c30e): grouping by (question, attributes) moves no country number."""
    names = {"train": "C1-Q1", "valid": "C1-Q2", "test_1": "C1-Q3", "test_2": "C2-Q1", "test_3": "C2-Q2",
             "test_4": "C2-Q3", "test_5": "C3-Q1", "test_6": "C3-Q2", "test_7": "C3-Q3"}
    rows = [r for f in ("train", "valid", "test") for r in read_rows(
        shared_data / "wvs7" / f"sft_wvs_{f}.json", subset_names=names).rows]
    seen = {r.question_id for r in rows if r.subset == "C1-Q1"}
    unseen = {r.question_id for r in rows} - seen
    keep = set(sorted(seen, key=int)[:20]) | set(sorted(unseen, key=int)[:20])
    rows = [r for r in rows if r.question_id in keep]
    train = [r for r in rows if r.subset == "C1-Q1"]
    test = [r for r in rows if r.subset != "C1-Q1"]
    assert all(r.attributes == () for r in rows) and (len(train), len(test)) == (920, 1659)
    fingerprints = country_fingerprints(AvgCultureBaseline, SurveyPrior, train, test, rows)
    assert fingerprints == {"avg_culture": "0956c9a18d734b81", "equal_uniform": "b065a86c73e3d939",
                            "equal_position": "6bf436796824d90a", "similarity_position": "e807590de2d4ee85",
                            "similarity_ctrl": "f3d7beddb574b0d8"}


def country_fingerprints(avg_culture, survey_prior, train, test, rows) -> dict[str, str]:
    """Short hashes of the predictions (rounded to 1e-10) of ``avg_culture`` on ``test`` and of the priors of
    ``survey_prior`` on ``rows``; the classes are arguments so the same code fingerprints the code before."""
    def digest(predictions):
        values = [[round(float(v), 10) for v in p] for p in predictions]
        return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:16]

    rng = np.random.default_rng(0)
    embeddings = {c: rng.normal(size=8) for c in sorted({r.country for r in rows})}
    equal, position = survey_prior(train), survey_prior(train, fallback="position")
    similar = survey_prior(train, embeddings, 0.3, fallback="position")
    return {
        "avg_culture": digest(avg_culture().fit(train).predict(test)),
        "equal_uniform": digest([equal.prior(r) for r in rows]),
        "equal_position": digest([position.prior(r) for r in rows]),
        "similarity_position": digest([similar.prior(r) for r in rows]),
        "similarity_ctrl": digest([similar.prior(dataclasses.replace(r, country="Kenya"), exclude=(r.country,))
                                   for r in rows[::5]]),
    }


# ------------------------------------------------------------------------------------------- through run.py
POPULATION_PARTS = {  # data_type -> (countries, questions)
    "train": ("XYZ", ("1", "2")), "valid": ("XYZ", ("3",)), "test_1": ("XYZ", ("4",)),
    "test_2": ("V", ("1", "2")), "test_3": ("V", ("3",)), "test_4": ("V", ("4",)),
    "test_5": ("W", ("1", "2")), "test_6": ("W", ("3",)), "test_7": ("W", ("4",)),
}


def write_population_files(folder):
    """A tiny population data set in the paper's format: countries X, Y, Z (C1), V (C2), W (C3), questions 1-2
    (Q1), 3 (Q2), 4 (Q3), women and men, seeded shares; the country's shares are its subgroups' mean."""
    rng = np.random.default_rng(7)
    files = {"train": [], "valid": [], "test": []}
    for data_type, (countries, questions) in POPULATION_PARTS.items():
        for country in countries:
            for question in questions:
                letters = "ABC" if question in ("2", "4") else "AB"
                women, men = rng.dirichlet(np.ones(len(letters)) * 2, size=2) * 100
                overall = (women + men) / 2
                for sex, shares in (("female", women), ("male", men)):
                    files[data_type if data_type in ("train", "valid") else "test"].append({
                        "id": question, "instruction": f"How would someone from {country} answer the following "
                        "question:\n\n", "input": f"Question {question}?\nHere are the options: \n",
                        "options": [f"({l})option {l}" for l in letters], "data_type": data_type,
                        "options_dist": dict(zip(letters, shares.tolist())), "n": 120, "n_eff": 100.5,
                        "population": {"country": country, "sex": sex},
                        "country_shares": dict(zip(letters, overall.tolist()))})
    for name, rows in files.items():
        (folder / f"populations_{name}.json").write_text(json.dumps(rows), encoding="utf-8")
    return [f"populations_{name}.json" for name in files]


def run_py(*overrides):
    import subprocess
    import sys

    from conftest import REPO

    return subprocess.run([sys.executable, "run.py", *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=900)


def ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_the_breakdown_baselines_run_as_methods_and_score_what_they_predict(tmp_path):
    files = write_population_files(tmp_path)
    data = (f"data.root={tmp_path}", f"data.files=[{','.join(files)}]", "logger=none")
    for method in ("country_shares", "subgroup_shift"):
        ok(run_py(f"method={method}", *data, f"hydra.run.dir={tmp_path / method}"))
    shift = json.loads((tmp_path / "subgroup_shift" / "metrics.json").read_text())
    shares = json.loads((tmp_path / "country_shares" / "metrics.json").read_text())
    names = {t: s for t, s in zip(POPULATION_PARTS, ["C1-Q1", "C1-Q2", "C1-Q3", "C2-Q1", "C2-Q2", "C2-Q3",
                                                      "C3-Q1", "C3-Q2", "C3-Q3"])}
    rows = [r for f in files for r in read_rows(tmp_path / f, subset_names=names).rows]
    train, c2q1 = [r for r in rows if r.subset == "C1-Q1"], [r for r in rows if r.subset == "C2-Q1"]
    from simlab.metrics.scoring import score_subset

    expected = score_subset(c2q1, SubgroupShiftBaseline(eps=0.01).fit(train).predict(c2q1))
    assert shift["subsets"]["C2-Q1"]["one_minus_jsd"] == pytest.approx(expected["one_minus_jsd"], abs=1e-9)
    report = shift["baseline_report"]
    assert report["eps"] == 0.01 and report["by_subset"]["C2-Q1"]["no_shift"] == 0
    assert report["by_subset"]["C2-Q2"]["no_shift"] == report["by_subset"]["C2-Q2"]["rows"] == 2  # unseen question
    assert shift["subsets"]["C3-Q3"] == shares["subsets"]["C3-Q3"]  # no shift: the country's shares
    # a file without country shares: one line naming it and the row
    raw = json.loads((tmp_path / files[2]).read_text())
    del raw[0]["country_shares"]
    (tmp_path / files[2]).write_text(json.dumps(raw), encoding="utf-8")
    failed = run_py("method=country_shares", *data, f"hydra.run.dir={tmp_path / 'failed'}")
    assert failed.returncode != 0
    assert "populations_test.json: row 0 (X | sex=female, question 4): no country_shares" in failed.stderr


def test_the_new_country_baselines_run_on_population_rows(tmp_path):
    files = write_population_files(tmp_path)
    data = (f"data.root={tmp_path}", f"data.files=[{','.join(files)}]", "logger=none")
    ok(run_py("method=avg_culture", *data, f"hydra.run.dir={tmp_path / 'avg'}"))
    ok(run_py("method=prior_only", "baseline.similarity=false", *data, f"hydra.run.dir={tmp_path / 'prior'}"))
    names = dict(zip(POPULATION_PARTS, ["C1-Q1", "C1-Q2", "C1-Q3", "C2-Q1", "C2-Q2", "C2-Q3", "C3-Q1", "C3-Q2",
                                        "C3-Q3"]))
    rows = [r for f in files for r in read_rows(tmp_path / f, subset_names=names).rows]
    train, c3q1 = [r for r in rows if r.subset == "C1-Q1"], [r for r in rows if r.subset == "C3-Q1"]
    from simlab.metrics.scoring import score_subset

    by_hand = [list(np.mean([t.target for t in train if (t.question_id, t.attributes) == (r.question_id,
                                                                                        r.attributes)], axis=0))
               for r in c3q1]  # the same subgroup's mean over X, Y and Z
    avg = json.loads((tmp_path / "avg" / "metrics.json").read_text())
    assert avg["subsets"]["C3-Q1"]["one_minus_jsd"] == pytest.approx(score_subset(c3q1, by_hand)["one_minus_jsd"])
    assert avg["baseline_report"]["by_subset"]["C3-Q1"]["seen"] == 4
    prior = json.loads((tmp_path / "prior" / "metrics.json").read_text())
    smoothed = [[0.99 * v + 0.01 / len(p) for v in p] for p in by_hand]
    assert prior["subsets"]["C3-Q1"]["one_minus_jsd"] == pytest.approx(
        score_subset(c3q1, smoothed)["one_minus_jsd"])


def test_a_breakdown_prior_anchored_fine_tune_saves_its_prior_and_evaluation_reuses_it(tmp_path, tiny_llama_dir):
    files = write_population_files(tmp_path)
    common = ("model=hf", f"model.path={tiny_llama_dir}", "logger=none", "data.max_length=2048",
              f"data.root={tmp_path}", f"data.files=[{','.join(files)}]")
    ok(run_py(*common, "method=breakdown_prior_anchored", "experiment=smoke", "trainer.limit_train_batches=2",
              f"hydra.run.dir={tmp_path / 'ft'}"))
    saved = json.loads((tmp_path / "ft" / "adapter" / "prior.json").read_text())
    assert saved["build"] == {"use": "breakdown", "similarity": False, "eps": 0.01, "smoothing": 0.01}
    tuned = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert tuned["prior"] == {"use": "breakdown", "eps": 0.01, "smoothing": 0.01}
    ok(run_py(*common, "task=zeroshot", f"model.adapter={tmp_path / 'ft' / 'adapter'}", "data.test_subsets=[C2-Q1]",
              f"hydra.run.dir={tmp_path / 'zs'}"))
    again = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    assert again["prior"] == tuned["prior"]
    assert again["subsets"]["C2-Q1"]["one_minus_jsd"] == pytest.approx(
        tuned["subsets"]["C2-Q1"]["one_minus_jsd"], abs=1e-6)
