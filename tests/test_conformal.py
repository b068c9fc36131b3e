"""Prediction intervals (simlab.simulator.intervals), their metrics (simlab.metrics.intervals) and what a simulator is
worth in respondents (simlab.analysis.respondents): coverage on data with a known distribution, bounds, the saved
adapter, and end to end through run.py on a tiny Llama."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from simlab.analysis.respondents import effective_respondents, mean_one_minus_jsd
from simlab.metrics.intervals import level_suffix, score_intervals
from simlab.simulator.intervals import (
    SCORES,
    ConformalIntervals,
    compare_scores,
    conformal_quantile,
    coverage_and_width,
    fit_intervals,
)


def synthetic(questions: int, rows_per_question: int = 6, seed: int = 0):
    """A simulator whose errors share a question-level part (a misread question misses on all its countries):
    true shares ~ Dirichlet, predictions = softmax(log truth + question shift + row noise)."""
    rng = np.random.default_rng(seed)
    preds, targets, keys = [], [], []
    for j in range(questions):
        k = int(rng.choice([2, 4, 5, 10]))
        shift = rng.normal(0, 0.6, size=k)
        for _ in range(rows_per_question):
            truth = rng.dirichlet(np.full(k, 1.5))
            logits = np.log(truth + 1e-9) + shift + rng.normal(0, 0.3, size=k)
            p = np.exp(logits - logits.max())
            preds.append(list(p / p.sum()))
            targets.append(list(truth))
            keys.append(("wvs7", str(j)))
    return preds, targets, keys


def test_the_quantile_is_split_conformal_with_the_m_plus_1_correction_for_one_share_per_question():
    scores = [np.array([s]) for s in np.arange(1, 20) / 20]  # 19 questions, one share each
    keys = list(range(19))
    # ceil(0.9 * 20) = 18: the 18th smallest score
    assert conformal_quantile(scores, keys, 0.9) == pytest.approx(18 / 20)
    assert conformal_quantile(scores[:8], keys[:8], 0.9) is None  # 8 questions cannot certify 90%
    one = fit_intervals([[0.5, 0.5]] * 3, [[0.4, 0.6]] * 3, ["q"] * 3, check_splits=5)  # one question: no halves
    assert one.quantile is None and one.split_half is None and one.bounds([[0.3, 0.7]]) == ([[0.0, 0.0]], [[1.0, 1.0]])


def test_a_question_counts_once_however_many_rows_it_has():
    # question 0: 100 rows that are all covered at t = 0.1; questions 1..19: one share each at 1..19
    scores = [np.array([0.1])] * 100 + [np.array([float(s)]) for s in range(1, 20)]
    keys = [0] * 100 + list(range(1, 20))
    # 20 questions: need 0.9 * 21 = 18.9 covered questions: question 0 plus 18 more -> t = 18 (rows would say 0.1)
    assert conformal_quantile(scores, keys, 0.9) == pytest.approx(18.0)


def test_intervals_cover_new_questions_at_the_level():
    """Fitted on 300 questions, measured on 300 others of the same distribution: for every score, the mean coverage
    over 10 draws is the level within sampling error (the guarantee is >= 0.9 on average over draws; one draw
    varies by a few points, as its 300 questions share their errors row by row)."""
    coverages = {score: [] for score in SCORES}
    for seed in range(10):
        preds, targets, keys = synthetic(600, seed=seed)
        fit, held = slice(0, 1800), slice(1800, 3600)
        for score in SCORES:
            intervals = fit_intervals(preds[fit], targets[fit], keys[fit], level=0.9, score=score)
            coverage, width = coverage_and_width(intervals, preds[held], targets[held])
            coverages[score].append(coverage)
            assert 0 < width < 1
    for score, values in coverages.items():
        assert np.mean(values) == pytest.approx(0.9, abs=0.015), score
        assert min(values) > 0.84, score


def test_bounds_stay_in_0_1_and_hold_the_prediction():
    preds = [[0.999, 0.001], [0.0, 0.2, 0.8], [1 / 3] * 3, [1.0]]
    for score in SCORES:
        for quantile in (0.0, 0.7, 50.0, None):
            lower, upper = ConformalIntervals(0.9, score, 0.05, quantile).bounds(preds)
            for p, lo, hi in zip(preds, lower, upper):
                assert len(lo) == len(hi) == len(p)
                assert all(0.0 <= a <= b <= 1.0 for a, b in zip(lo, hi))
                assert all(a <= x <= b for a, x, b in zip(lo, p, hi))
    lower, upper = ConformalIntervals(0.9, "binomial", 0.05, 1.0).bounds([[0.01, 0.5, 0.49]])
    assert upper[0][0] - lower[0][0] < upper[0][1] - lower[0][1]  # narrow where the model is sure


def test_the_metrics_are_named_after_the_level_and_count_shares_inside():
    assert level_suffix(0.9) == "90" and level_suffix(0.95) == "95" and level_suffix(0.975) == "97_5"
    values = score_intervals([[0.2, 0.8], [0.5, 0.25, 0.25]], [[0.1, 0.5], [0.0, 0.3, 0.2]],
                             [[0.3, 0.7], [0.6, 0.4, 0.3]], 0.9)
    assert values["coverage_90"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert values["interval_width_90"] == pytest.approx((0.2 + (0.6 + 0.1 + 0.1) / 3) / 2)


def test_a_saved_record_is_checked():
    record = ConformalIntervals(0.9, "binomial", 0.05, 1.25, "C1-Q2", 30, 300).to_dict()
    assert ConformalIntervals.from_dict(record) == ConformalIntervals(0.9, "binomial", 0.05, 1.25, "C1-Q2", 30, 300)
    with pytest.raises(ValueError, match=r"calibration.json: field 'intervals': .*score must be one of"):
        ConformalIntervals.from_dict({**record, "score": "magic"}, where="calibration.json: field 'intervals'")
    with pytest.raises(ValueError, match="field 'quantile' must be a finite number"):
        ConformalIntervals.from_dict({**record, "quantile": -1})
    with pytest.raises(ValueError, match="field 'level' missing"):
        ConformalIntervals.from_dict({k: v for k, v in record.items() if k != "level"})


def test_the_simultaneous_scheme_covers_every_share_of_a_question_at_once():
    from simlab.analysis.intervals import simultaneous_quantile

    preds, targets, keys = synthetic(60)
    quantile = simultaneous_quantile(preds, targets, keys, 0.9, "absolute", 0.05)
    worst = sorted({k: max(abs(np.subtract(y, p)).max() for p, y, q in zip(preds, targets, keys) if q == k)
                    for k in set(keys)}.values())
    assert quantile == pytest.approx(worst[int(np.ceil(0.9 * 61)) - 1])
    assert quantile > conformal_quantile([abs(np.subtract(y, p)) for p, y in zip(preds, targets)], keys, 0.9)


def test_the_config_turns_intervals_off_with_a_null_level():
    from omegaconf import OmegaConf

    from simlab.tasks.outputs import interval_settings

    assert interval_settings(OmegaConf.create({"intervals": {"level": None, "score": "binomial"}})) is None
    assert interval_settings(OmegaConf.create({})) is None
    on = OmegaConf.create({"intervals": {"level": 0.8, "score": "entropy", "delta": 0.1, "check_splits": 0}})
    assert interval_settings(on) == {"level": 0.8, "score": "entropy", "delta": 0.1, "check_splits": 0}


def test_the_split_half_comparison_reports_every_score():
    preds, targets, keys = synthetic(120)
    result = compare_scores(preds, targets, keys, splits=3)
    assert set(result) == set(SCORES)
    for check in result.values():
        assert check["questions"] == 120 and check["splits"] == 3 and check["unbounded_fits"] == 0
        assert check["coverage_min"] <= check["coverage"] <= check["coverage_max"] <= 1 and 0 < check["width"] < 1


def test_effective_respondents_recovers_the_size_of_a_sample():
    rng = np.random.default_rng(3)
    targets = [list(rng.dirichlet(np.ones(int(k)))) for k in rng.choice([2, 4, 7], size=300)]
    for k in (10, 50):
        simulator = [list(rng.multinomial(k, t) / k) for t in targets]
        found = effective_respondents(targets, mean_one_minus_jsd(targets, simulator), max_k=5000)
        assert found["bound"] is None and 0.8 * k <= found["k"] <= 1.2 * k
    perfect = effective_respondents(targets, mean_one_minus_jsd(targets, targets), max_k=1000)
    assert perfect == {**perfect, "k": 1000, "bound": "at_least"}
    wrong = [list(np.eye(len(t))[int(np.argmin(t))]) for t in targets]  # all mass on the least chosen option
    assert effective_respondents(targets, mean_one_minus_jsd(targets, wrong))["bound"] == "at_most"


def test_intervals_survive_save_and_load_with_the_adapter(tmp_path, tiny_llama_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from simlab.simulator.bundle import load_calibration, load_simulator, save_calibration

    folder = tmp_path / "run" / "adapter"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj"])).save_pretrained(folder)
    preds, targets, keys = synthetic(40)
    fitted = fit_intervals(preds, targets, keys, fitted_on="C1-Q2", check_splits=2)
    save_calibration(folder, 1.3, "C1-Q2", len(preds), intervals=fitted.to_dict())

    loaded = load_simulator({"path": str(tiny_llama_dir)}, folder)
    assert loaded.temperature == 1.3 and loaded.intervals == fitted
    assert loaded.intervals.bounds(preds[:3]) == fitted.bounds(preds[:3])

    save_calibration(folder, 1.3, "C1-Q2", len(preds))  # a folder saved before intervals existed
    assert load_calibration(folder) == {"temperature": 1.3, "fitted_on": "C1-Q2", "rows": len(preds)}
    assert load_simulator({"path": str(tiny_llama_dir)}, folder).intervals is None

    record = json.loads((folder / "calibration.json").read_text())
    (folder / "calibration.json").write_text(json.dumps({**record, "intervals": {"level": 2}}))
    with pytest.raises(ValueError, match=r"calibration.json: field 'intervals': field 'score' missing"):
        load_calibration(folder)


def run_py(*overrides):
    result = subprocess.run([sys.executable, "run.py", *overrides], cwd=REPO, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_a_calibrated_finetune_scores_its_intervals_and_evaluation_applies_them(tiny_llama_dir, shared_data,
                                                                                 tmp_path):
    common = ["model=hf", f"model.path={tiny_llama_dir}", "logger=none", "data.limit_per_subset=16",
              "data.max_length=2048", f"data.root={shared_data}"]
    run_py(*common, "experiment=smoke", "trainer.limit_train_batches=2", "calibrate=true",
           f"hydra.run.dir={tmp_path / 'ft'}")
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    saved = json.loads((tmp_path / "ft" / "adapter" / "calibration.json").read_text())["intervals"]
    assert metrics["intervals"] == {**saved, "source": "fitted"} and saved["fitted_on"] == "C1-Q2"
    assert saved["level"] == 0.9 and saved["quantile"] is not None and saved["split_half"]["splits"] == 20
    for subset, values in metrics["subsets"].items():
        assert 0 <= values["coverage_90"] <= 1 and 0 < values["interval_width_90"] <= 1
        assert metrics["effective_respondents"][subset]["k"] >= 1
        assert "one_minus_jsd" in values and "coverage_90" not in metrics["uncalibrated"]["subsets"][subset]
    lines = [json.loads(line) for line in (tmp_path / "ft" / "predictions.jsonl").read_text().splitlines()]
    assert all(0 <= lo <= p <= hi <= 1 for line in lines
               for lo, p, hi in zip(line["interval_lower"], line["predicted"], line["interval_upper"]))
    table = (tmp_path / "ft" / "results.md").read_text()
    assert "coverage 90% | width 90% | ceiling 1-JSD | respondents |" in table and "Prediction intervals: 90%" in table

    # a re-analysis of a sample of the rows applies the run's intervals to it again
    from simlab.analysis.reanalyse import reanalyse

    sample = reanalyse(tmp_path / "ft", tmp_path / "sample", limit_eval_per_subset=4)
    records = [json.loads(line) for line in (tmp_path / "sample" / "predictions.jsonl").read_text().splitlines()]
    for subset, values in sample["subsets"].items():
        mine = [r for r in records if r["subset"] == subset]
        lower, upper = ConformalIntervals.from_dict(saved).bounds([r["predicted"] for r in mine])
        assert values["n"] == 4 and values["coverage_90"] == pytest.approx(
            score_intervals([r["human"] for r in mine], lower, upper, 0.9)["coverage_90"])

    # the score comparison on the run's valid split (python -m simlab.analysis.intervals)
    from simlab.analysis.intervals import compare_run, comparison_table

    compared = compare_run(tmp_path / "ft", splits=2, calibrate=True)
    assert list(compared) == [*SCORES, "binomial, all shares of a question at once"]
    assert comparison_table(compared).count("\n") == len(compared) + 1

    # evaluating the adapter applies the saved intervals (never refitted, even without the valid split)
    run_py(*common, "task=zeroshot", f"model.adapter={tmp_path / 'ft' / 'adapter'}", "data.test_subsets=[C2-Q1]",
           f"hydra.run.dir={tmp_path / 'zs'}")
    again = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    assert again["intervals"]["quantile"] == saved["quantile"]
    assert again["intervals"]["source"].endswith("calibration.json")
    assert again["subsets"]["C2-Q1"]["coverage_90"] == pytest.approx(metrics["subsets"]["C2-Q1"]["coverage_90"])

    # an adapter saved before intervals: evaluated as before, with no interval metrics (absent, not 0)
    calibration = tmp_path / "ft" / "adapter" / "calibration.json"
    calibration.write_text(json.dumps({k: v for k, v in json.loads(calibration.read_text()).items()
                                       if k != "intervals"}))
    result = run_py(*common, "task=zeroshot", f"model.adapter={tmp_path / 'ft' / 'adapter'}",
                    "data.test_subsets=[C2-Q1]", f"hydra.run.dir={tmp_path / 'old'}")
    old = json.loads((tmp_path / "old" / "metrics.json").read_text())
    assert "intervals" not in old and "coverage_90" not in old["subsets"]["C2-Q1"]
    assert old["subsets"]["C2-Q1"]["one_minus_jsd"] == again["subsets"]["C2-Q1"]["one_minus_jsd"]
    assert "has no prediction intervals" in result.stdout + result.stderr


def test_a_baseline_gets_intervals_the_same_way(shared_data, tmp_path):
    run_py("task=baseline", "baseline=uniform", "logger=none", "data.limit_per_subset=16", f"data.root={shared_data}",
           "calibrate=true", f"hydra.run.dir={tmp_path / 'uniform'}")
    metrics = json.loads((tmp_path / "uniform" / "metrics.json").read_text())
    assert metrics["intervals"]["fitted_on"] == "C1-Q2" and "calibration" not in metrics
    assert all("coverage_90" in values and "interval_width_90" in values for values in metrics["subsets"].values())
    run_py("task=baseline", "baseline=uniform", "logger=none", "data.limit_per_subset=16", f"data.root={shared_data}",
           f"hydra.run.dir={tmp_path / 'plain'}")
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert "intervals" not in plain and all("coverage_90" not in v for v in plain["subsets"].values())
    assert plain["subsets"]["C2-Q1"]["one_minus_jsd"] == metrics["subsets"]["C2-Q1"]["one_minus_jsd"]

    # on data without the valid split (the unseen Pew survey) a baseline applies the intervals of its WVS run
    run_py("data=pew", "task=baseline", "baseline=uniform", "logger=none", "data.limit_per_subset=16",
           f"data.root={shared_data}", "calibrate=true", f"intervals.source={tmp_path / 'uniform'}",
           f"hydra.run.dir={tmp_path / 'pew'}")
    pew = json.loads((tmp_path / "pew" / "metrics.json").read_text())
    assert pew["intervals"]["quantile"] == metrics["intervals"]["quantile"]
    assert pew["intervals"]["source"] == f"{tmp_path / 'uniform'}/metrics.json"
    assert all("coverage_90" in values for values in pew["subsets"].values()) and set(pew["subsets"]) == {
        "pew_c1", "pew_c3"}
    result = subprocess.run([sys.executable, "run.py", "data=pew", "task=baseline", "baseline=uniform",
                             "logger=none", "data.limit_per_subset=4", f"data.root={shared_data}", "calibrate=true",
                             f"hydra.run.dir={tmp_path / 'pew_refused'}"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0 and "calibrate_on='C1-Q2', which was not tested" in result.stderr


def test_too_few_questions_warn_once_for_the_fit_and_once_for_all_its_split_halves(caplog):
    preds, targets, keys = synthetic(6)  # 6 questions: neither the fit nor a half (3) can certify 90%
    with caplog.at_level("WARNING", logger="simlab.simulator.intervals"):
        fitted = fit_intervals(preds, targets, keys, check_splits=20)
    messages = [r.getMessage() for r in caplog.records]
    assert fitted.quantile is None and fitted.split_half["unbounded_fits"] == 40
    assert len(messages) == 2, messages
    assert messages[0].startswith("6 questions cannot certify 0.9 coverage")
    assert messages[1].startswith("split-half check: 40 of 40 half fits had too few questions to certify 0.9")
