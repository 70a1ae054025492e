"""Possible label errors: planted flips are found, good images of a small imbalanced set are not accused."""

import numpy as np
import pytest

from imgclf import suspects


def _features(labels, seed, separation, dims):
    """Like a backbone's pooled features of two classes: non-negative dimensions of very different spread (what
    made the earlier, uncalibrated rule accuse good images), the classes apart in many of them."""
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(size=dims) * 1.5)
    centres = rng.normal(size=(2, dims)) * separation
    return (np.maximum(centres[labels] + rng.normal(size=(len(labels), dims)), 0) * scale).astype(np.float32)


def _saved_model(features, labels, train, validation):
    """What training saves, as the product trains a frozen backbone's head: dropout and the output layer, the
    epoch with the best validation loss. It has seen the training images."""
    import keras

    keras.utils.set_random_seed(0)
    x = features / features[train].std()
    model = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Dropout(0.2), keras.layers.Dense(2, "softmax")])
    model.compile(keras.optimizers.Adam(0.002), "sparse_categorical_crossentropy")
    stop = keras.callbacks.EarlyStopping(patience=8, restore_best_weights=True)
    model.fit(x[train], labels[train], validation_data=(x[validation], labels[validation]), epochs=100,
              batch_size=32, callbacks=[stop], verbose=0)  # fmt: skip
    return model.predict(x, verbose=0)


def _split(count, seed):
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[count // 5 :]), np.sort(order[: count // 5])


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_flips_are_found_and_few_others(seed):
    true = np.repeat([0, 1], 400)
    features = _features(true, seed, separation=0.6, dims=64)
    train, validation = _split(len(true), seed)
    labels = true.copy()
    flipped = np.random.default_rng(seed).choice(train, 16, replace=False)
    labels[flipped] = 1 - labels[flipped]
    probabilities = _saved_model(features, labels, train, validation)
    findings = suspects.find(labels, train, {"validation": (validation, probabilities[validation])},
                             probabilities[train], features)  # fmt: skip
    flagged = {row[0] for row in findings.rows}
    assert len(flagged & set(flipped.tolist())) >= 14  # of 16
    assert len(flagged - set(flipped.tolist())) <= 3
    for index, suggested, own, other, how in findings.rows:
        assert own <= suspects.SUSPECT_PROBABILITY and suggested != labels[index] and other > 0.5
        assert how.startswith("out of fold") or how.endswith("(held out)")


@pytest.mark.parametrize("seed", [0, 1])
def test_a_small_imbalanced_set_with_right_labels_accuses_almost_nobody(seed):
    """120 + 40 images, every label right: the old rule (uncalibrated, unbalanced, no second judge) accused
    several good images of the small class here."""
    labels = np.repeat([0, 1], [120, 40])
    features = _features(labels, seed, separation=0.2, dims=1280)
    train, validation = _split(len(labels), seed)
    probabilities = _saved_model(features, labels, train, validation)
    findings = suspects.find(labels, train, {"validation": (validation, probabilities[validation])},
                             probabilities[train], features)  # fmt: skip
    assert len(findings.rows) <= 1 and findings.chance <= 2


def test_the_chance_figure_follows_the_models_confident_mistakes_on_validation():
    labels = np.repeat([0, 1], 50)
    train, validation = np.arange(0, 100, 2), np.arange(1, 100, 2)
    probabilities = np.where(labels[:, None] == np.arange(2), 0.99, 0.01)
    probabilities[validation[:5]] = probabilities[validation[:5]][:, ::-1]  # 5 of 50 confidently wrong
    findings = suspects.find(labels, train, {"validation": (validation, probabilities[validation])},
                             probabilities[train])  # fmt: skip
    assert (findings.mistakes, findings.validation_images, findings.chance) == (5, 50, 5.0)
    assert [row[4] for row in findings.rows] == ["the trained model (held out)"] * 5


def test_temperature_undoes_overconfidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 2)) * 2
    labels = (rng.random(4000) < suspects._softmax(logits)[:, 1]).astype(int)  # calibrated at T = 1
    assert suspects.fit_temperature(logits * 4, labels) == pytest.approx(4, rel=0.15)
