"""Sampling-noise ceiling: exact small cases against scipy, convergence towards 1, determinism, rows
without a respondent count."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import multinomial

from simlab.analysis.ceiling import expected_one_minus_jsd, noise_ceiling, one_minus_jsd
from simlab.data.rows import SurveyRow


def _row(target, n, index=0) -> SurveyRow:
    letters = tuple("ABCDEFGHIJ"[: len(target)])
    return SurveyRow(
        subset="test", question_id=str(index), country="Andorra", instruction="", question="",
        options=tuple(f"({letter})x" for letter in letters), letters=letters, target=tuple(target), n=n,
        source="memory", index=index,
    )


def _exact_expectation(p, n) -> tuple[float, float]:
    """Exact mean and standard deviation of 1 - JSD(p, counts / n), enumerating every multinomial outcome."""
    values, weights = [], []
    for counts in itertools.product(range(n + 1), repeat=len(p)):
        if sum(counts) != n:
            continue
        weights.append(multinomial.pmf(counts, n, p))
        values.append(1.0 - jensenshannon(p, np.array(counts) / n))
    values, weights = np.array(values), np.array(weights)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    mean = float(np.sum(weights * values))
    return mean, float(np.sqrt(np.sum(weights * (values - mean) ** 2)))


def test_one_minus_jsd_matches_scipy_with_zeros():
    rng = np.random.default_rng(1)
    for k in (2, 3, 5, 9):
        p, q = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k))
        p[0], q[-1] = 0.0, 0.0
        p, q = p / p.sum(), q / q.sum()
        assert one_minus_jsd(p, q) == pytest.approx(1.0 - jensenshannon(p, q), abs=1e-12)
    assert one_minus_jsd(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1 - math.sqrt(math.log(2)))


def test_half_half_with_one_respondent_is_exact():
    # every resample is (1, 0) or (0, 1), both at the same distance from (0.5, 0.5)
    expected = 1.0 - jensenshannon([0.5, 0.5], [1.0, 0.0])
    # closed form: m = (0.75, 0.25); JS = ½ KL(p ‖ m) + ½ KL((1, 0) ‖ m)
    js = 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)) + 0.5 * math.log(1.0 / 0.75)
    assert expected == pytest.approx(1.0 - math.sqrt(js), abs=1e-12)
    value = expected_one_minus_jsd([0.5, 0.5], 1, samples=50, rng=np.random.default_rng(0))
    assert value == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("p", [(0.5, 0.5), (0.3, 0.7), (0.2, 0.5, 0.3), (0.6, 0.4, 0.0)])
def test_two_respondents_match_exact_enumeration(p):
    samples = 20_000
    exact, sd = _exact_expectation(np.array(p), 2)
    estimate = expected_one_minus_jsd(p, 2, samples=samples, rng=np.random.default_rng(7))
    standard_error = sd / math.sqrt(samples)
    assert abs(estimate - exact) <= 5 * standard_error + 1e-12


def test_ceiling_grows_towards_one():
    p = [0.1, 0.2, 0.3, 0.4]
    values = [expected_one_minus_jsd(p, n, samples=400, rng=np.random.default_rng(0)) for n in (5, 50, 500, 50_000)]
    assert all(a < b for a, b in zip(values, values[1:]))
    assert values[-1] > 0.99
    assert values[0] < 0.95
    # a degenerate distribution has no sampling noise at all
    assert expected_one_minus_jsd([1.0, 0.0, 0.0], 3) == pytest.approx(1.0, abs=1e-12)


def test_noise_ceiling_is_deterministic_and_counts_rows_without_n():
    rows = [_row([0.2, 0.8], 10, 0), _row([0.1, 0.3, 0.6], None, 1), _row([0.25, 0.25, 0.5], 40, 2),
            _row([0.5, 0.5], None, 3)]
    first = noise_ceiling(rows, samples=100, seed=3)
    assert first == noise_ceiling(rows, samples=100, seed=3)
    assert first["rows_with_n"] == 2
    assert first["rows_without_n"] == 2
    assert first["samples"] == 100 and first["seed"] == 3
    assert 0.0 < first["one_minus_jsd"] < 1.0
    assert noise_ceiling(rows, samples=100, seed=4)["one_minus_jsd"] != first["one_minus_jsd"]
    # the rows without n do not enter the mean
    only_with_n = noise_ceiling([rows[0], rows[2]], samples=100, seed=3)
    assert only_with_n["one_minus_jsd"] == first["one_minus_jsd"]
    none = noise_ceiling([rows[1]], samples=10)
    assert none["one_minus_jsd"] is None and none["rows_without_n"] == 1 and none["rows_with_n"] == 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="n must be"):
        expected_one_minus_jsd([0.5, 0.5], 0)
    with pytest.raises(ValueError, match="samples must be"):
        expected_one_minus_jsd([0.5, 0.5], 5, samples=0)
    with pytest.raises(ValueError, match="non-negative"):
        expected_one_minus_jsd([0.5, math.nan], 5)
    with pytest.raises(ValueError, match="non-negative"):
        expected_one_minus_jsd([1.5, -0.5], 5)


def test_weighted_rows_resample_their_effective_sample_size():
    from dataclasses import replace

    from simlab.analysis.ceiling import resample_size

    target = [0.5, 0.3, 0.2]
    weighted = replace(_row(target, 400), n_eff=24.6, attributes=(("sex", "female"),))
    assert resample_size(weighted) == 25 and resample_size(_row(target, 400)) == 400
    assert resample_size(replace(_row(target, 3), n_eff=0.2)) == 1 and resample_size(_row(target, None)) is None
    simple = noise_ceiling([_row(target, 25)], samples=300, seed=4)
    assert noise_ceiling([weighted], samples=300, seed=4) == simple  # the draws of 25 answers, not of 400
    assert noise_ceiling([_row(target, 400)], samples=300, seed=4)["one_minus_jsd"] > simple["one_minus_jsd"]
