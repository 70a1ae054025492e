"""Class weights, balanced accuracy, ROC and PR curves, and the threshold choice, against direct computations."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import config
from imgclf import data, metrics, outputs
from imgclf.cli import UsageError


def test_class_weights_are_inverse_frequency_for_two_and_three_classes():
    np.testing.assert_allclose(outputs.class_weights([0] * 300 + [1] * 30, 2), [330 / 600, 330 / 60])
    weights = outputs.class_weights([0] * 60 + [1] * 30 + [2] * 10, 3)
    np.testing.assert_allclose(weights, [100 / 180, 100 / 90, 100 / 30])
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    assert np.isclose(weights[labels].mean(), 1.0)  # the loss keeps its scale
    assert outputs.class_weights([0] * 14 + [1] * 10, 2) is None  # 1.4x: balanced enough
    assert outputs.class_weights([0] * 15 + [1] * 10, 2) is not None  # 1.5x
    assert outputs.class_weights([0] * 300 + [1] * 30, 2, "none") is None


def test_weighted_batches_carry_each_images_weight():
    images = np.arange(6, dtype=np.float32).reshape(6, 1)
    labels = np.array([0, 0, 0, 0, 1, 1])
    weights = outputs.class_weights(labels, 2)[labels]
    batch = next(iter(data.batches(images, labels, np.arange(6), 6, weights=weights)))
    assert len(batch) == 3
    np.testing.assert_allclose(batch[2].numpy(), [0.75, 0.75, 0.75, 0.75, 1.5, 1.5])
    assert len(next(iter(data.batches(images, labels, np.arange(6), 6)))) == 2


def _pairwise_auc(positive, scores):
    above = scores[positive][:, None] - scores[~positive][None, :]
    return np.mean((above > 0) + 0.5 * (above == 0))


def _brute_average_precision(positive, scores):
    total, previous_recall = 0.0, 0.0
    for threshold in np.unique(scores)[::-1]:
        called = scores >= threshold
        recall = (called & positive).sum() / positive.sum()
        total += (recall - previous_recall) * (called & positive).sum() / called.sum()
        previous_recall = recall
    return total


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 20)), min_size=2, max_size=60))
def test_roc_auc_and_average_precision_match_direct_computations(pairs):
    positive = np.array([p for p, _ in pairs])
    scores = np.array([s / 20 for _, s in pairs])
    if positive.all() or not positive.any():
        return
    assert metrics.roc_auc(positive, scores) == pytest.approx(_pairwise_auc(positive, scores))
    assert metrics.average_precision(positive, scores) == pytest.approx(_brute_average_precision(positive, scores))


def test_balanced_accuracy_is_the_mean_recall():
    counts = np.array([[90, 10], [5, 5]])
    assert metrics.balanced_accuracy(counts) == pytest.approx((0.9 + 0.5) / 2)


def _balanced(positive, scores, threshold):
    called = scores >= threshold
    return ((called & positive).sum() / positive.sum() + (~called & ~positive).sum() / (~positive).sum()) / 2


def test_the_threshold_with_the_best_balanced_accuracy_is_found():
    # Worked by hand: 0.5 calls nothing positive (balanced 0.5); (0.3, 0.32], (0.35, 0.38] and (0.4, 0.42]
    # all give 0.8; the middle of the gap closest to 0.5 is chosen.
    scores = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.32, 0.38, 0.42, 0.45, 0.48])
    positive = np.arange(10) >= 5
    threshold = metrics.best_balanced_threshold(positive, scores)
    assert threshold == pytest.approx(0.41)
    assert _balanced(positive, scores, threshold) == pytest.approx(0.8)
    separable = metrics.best_balanced_threshold(np.array([False, False, True, True]), [0.1, 0.2, 0.8, 0.9])
    assert separable == 0.5  # every threshold in the gap is as good: the usual one


def test_a_gain_of_one_image_does_not_move_the_threshold():
    # 200 negatives, 20 positives: one negative at 0.6 is all that 0.65 would win over 0.5.
    scores = np.r_[np.linspace(0.0, 0.3, 199), 0.6, np.linspace(0.7, 1.0, 20)]
    positive = np.r_[np.zeros(200, bool), np.ones(20, bool)]
    assert metrics.best_balanced_threshold(positive, scores) == 0.5
    scores[185:199] = 0.6  # 15 negatives, worth more than one positive in balanced accuracy: a clear gain
    assert metrics.best_balanced_threshold(positive, scores) == pytest.approx(0.65)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 50)), min_size=2, max_size=40))
def test_no_threshold_beats_the_chosen_one_by_more_than_one_image(pairs):
    positive = np.array([p for p, _ in pairs])
    scores = np.array([s / 50 for _, s in pairs])
    if positive.all() or not positive.any():
        return
    chosen = _balanced(positive, scores, metrics.best_balanced_threshold(positive, scores))
    one_image = 1 / (2 * min(positive.sum(), (~positive).sum()))
    assert all(chosen >= _balanced(positive, scores, t) - one_image - 1e-12 for t in np.linspace(0, 1.01, 203))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 100)), min_size=4, max_size=50),
    st.sampled_from([0.5, 0.8, 0.95, 1.0]),
    st.integers(0, 1),
)
def test_target_recall_is_met_with_the_least_cost_to_the_other_class(pairs, target, class_index):
    labels = np.array([label for label, _ in pairs])
    scores = np.array([score / 100 for _, score in pairs])
    if not (labels == class_index).any():
        return
    threshold = metrics.threshold_for_recall(labels, scores, class_index, target)
    called = (scores >= threshold).astype(int)
    members = labels == class_index
    assert (called[members] == class_index).mean() >= target - 1e-9
    # One step further towards the other class (the next distinct score) would break the target.
    if class_index == 1:
        higher = scores[members & (scores > threshold)]
        if higher.size:
            assert ((scores[members] >= higher.min()).mean()) < target
    else:
        lower = scores[members & (scores < threshold)]
        if lower.size:
            assert ((scores[members] < lower.max()).mean()) < target


@pytest.mark.parametrize(
    "settings_, message",
    [
        ({"threshold": "high"}, "`--threshold` must be auto or a number from 0 to 1"),
        ({"threshold": "1.5"}, "`--threshold` must be auto or a number from 0 to 1"),
        ({"target_recall": "Dogs"}, "`--target-recall` must be CLASS=R"),
        ({"target_recall": "Dogs=0"}, "`--target-recall` must be CLASS=R"),
        ({"target_recall": "Dogs=0.9", "threshold": "0.3"}, "leave `--threshold` out"),
    ],
)
def test_threshold_flags_are_checked_when_the_configuration_is_made(settings_, message):
    with pytest.raises(UsageError, match=message):
        config.TrainConfig(**settings_)
