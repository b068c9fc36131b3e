import pytest

from simlab.analysis.position_bias import position_bias


def test_position_bias_by_hand():
    human = [[0.2, 0.8], [0.5, 0.3, 0.2]]
    predicted = [[0.6, 0.4], [0.7, 0.2, 0.1]]
    report = position_bias(human, predicted)
    assert report["rows_per_position"] == [2, 2, 1]
    assert report["predicted_mean_by_position"] == pytest.approx([0.65, 0.3, 0.1])
    assert report["human_mean_by_position"] == pytest.approx([0.35, 0.55, 0.2])
    assert report["argmax_first_share"] == 1.0
    assert report["human_majority_first_share"] == 0.5


def test_ties_count_the_first_option_and_mismatch_is_an_error():
    assert position_bias([[0.5, 0.5]], [[0.5, 0.5]])["argmax_first_share"] == 1.0
    with pytest.raises(ValueError):
        position_bias([[0.5, 0.5]], [])
