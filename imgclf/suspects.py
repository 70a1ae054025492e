"""Possible label errors: images whose label two judges that did not learn it find very unlikely.

A flag must be earned. Each judge's probabilities are calibrated (a temperature fitted
on images it did not train on), a flagged label gets at most SUSPECT_PROBABILITY from
them, and the trained model never endorses it confidently. The list comes with how
many flags the model's own confident mistakes would give by chance, at its accuracy.

- Training images of a frozen backbone: out of fold. Softmax regressions on the
  features (class-balanced, L2 strength chosen by out-of-fold loss), each trained
  without one fold, judge that fold; the saved model, which trained on the image,
  must not give its label ENDORSED or more.
- Held-out images (validation, test): the saved model, calibrated, and (for a frozen
  backbone) the fold classifiers' mean both give the label at most SUSPECT_PROBABILITY.
- Training images of a network trained whole: the saved model itself, calibrated (weaker
  evidence: it trained on them; `judged_by` says so).
"""

import dataclasses

import numpy as np

SUSPECT_PROBABILITY = 0.1  # a flagged label gets at most this calibrated probability
ENDORSED = 0.9  # ...and the saved model does not give it this much
FOLDS = 5
L2_STRENGTHS = (0.1, 1.0)  # tried side by side, the best out-of-fold loss wins (weaker ones never won: measured)


@dataclasses.dataclass
class Findings:
    """The flagged images and what chance alone would give.

    rows: (file index, suggested class, probability of its label, probability of the suggested class, judged_by),
        the least likely label first; `training_flags` of them are training images.
    chance: flags expected among the training images if every label were right: the rate of confident mistakes
        on the validation images, where no judge learned the label (`mistakes` of `validation_images`: every
        judge gives the label at most SUSPECT_PROBABILITY), times the training images. An estimate; a label
        error among the validation images counts as a mistake there too.
    """

    rows: list
    training_flags: int
    chance: float
    mistakes: int
    validation_images: int
    training_images: int


def find(labels, train, held, train_probabilities, features=None):
    """Judges every image's label.

    Args:
        labels: the class index of every file.
        train: indices of the training images.
        held: {role: (indices, per-class probabilities from the saved model)}, "validation" among them.
        train_probabilities: the saved model's probabilities of the training images.
        features: backbone features of every file (a frozen backbone), else None.
    """
    validation_indices, validation_probabilities = held["validation"]
    temperature = fit_temperature(np.log(np.clip(validation_probabilities, 1e-12, 1)), labels[validation_indices])
    saved = {role: _calibrated(probabilities, temperature) for role, (_, probabilities) in held.items()}
    rows = []
    if features is not None:
        held_features = np.concatenate([features[indices] for indices, _ in held.values()])
        oof, held_mean = out_of_fold(features[train], labels[train], train_probabilities.shape[1], held_features)
        endorsed = _own(train_probabilities, labels[train]) >= ENDORSED
        rows += _flags(train, oof, labels, (_own(oof, labels[train]) <= SUSPECT_PROBABILITY) & ~endorsed,
                       f"out of fold ({FOLDS} folds)")  # fmt: skip
        start, confident = 0, {}
        for role, (indices, _) in held.items():
            second = _own(held_mean[start : start + len(indices)], labels[indices])
            start += len(indices)
            confident[role] = (_own(saved[role], labels[indices]) <= SUSPECT_PROBABILITY) & (
                second <= SUSPECT_PROBABILITY
            )
            rows += _flags(indices, saved[role], labels, confident[role],
                           "the trained model and the fold classifiers (held out)")  # fmt: skip
        # Where no judge learned the labels, both confidently wrong: the rate chance gives at this accuracy.
        # (The training images' own rule would count far more: the saved model's not endorsing a label it never
        # saw is weak evidence. Measured: 36 against 8 training flags of a weak model with right labels.)
        mistakes = confident["validation"]
    else:
        seen = _calibrated(train_probabilities, temperature)
        rows += _flags(train, seen, labels, _own(seen, labels[train]) <= SUSPECT_PROBABILITY,
                       "the trained model (seen)")  # fmt: skip
        for role, (indices, _) in held.items():
            alone = _own(saved[role], labels[indices]) <= SUSPECT_PROBABILITY
            rows += _flags(indices, saved[role], labels, alone, "the trained model (held out)")
        mistakes = _own(saved["validation"], labels[validation_indices]) <= SUSPECT_PROBABILITY
    training = set(train.tolist())
    return Findings(
        rows=sorted(rows, key=lambda row: row[2]),
        training_flags=sum(1 for row in rows if row[0] in training),
        chance=len(train) * int(mistakes.sum()) / max(1, len(validation_indices)),
        mistakes=int(mistakes.sum()),
        validation_images=len(validation_indices),
        training_images=len(train),
    )


def _own(probabilities, labels):
    return probabilities[np.arange(len(labels)), labels]


def _flags(indices, probabilities, labels, chosen, judged_by):
    rows = []
    for row in np.flatnonzero(chosen):
        label, suggested = labels[indices[row]], int(np.argmax(probabilities[row]))
        rows.append(
            (int(indices[row]), suggested, float(probabilities[row, label]), float(probabilities[row, suggested]),
             judged_by)
        )  # fmt: skip
    return rows


def _softmax(logits):
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def _calibrated(probabilities, temperature):
    return _softmax(np.log(np.clip(probabilities, 1e-12, 1)) / temperature)


def fit_temperature(logits, labels):
    """The temperature T (0.25 to 16) whose softmax(logits / T) gives `labels` the lowest cross-entropy."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(16), 60))
    losses = [-np.mean(np.log(np.clip(_own(_softmax(logits / t), labels), 1e-12, 1))) for t in grid]
    return float(grid[int(np.argmin(losses))])


def out_of_fold(features, labels, num_classes, held_features, folds=FOLDS, steps=200, seed=0):
    """(calibrated out-of-fold probabilities of the training images, calibrated probabilities of `held_features`
    from the fold classifiers' mean logits).

    The images are dealt into `folds`; for each L2 strength, classifier k (softmax
    regression on the standardized features, class-balanced) trains on every fold but k
    and judges fold k. All folds x strengths train together as one batched computation
    in `steps` full-batch Adam steps (about a second for 8000 images on 2 cores); the
    strength with the lowest out-of-fold loss is kept, and a temperature fitted on its
    out-of-fold logits calibrates both results.
    """
    import keras
    import tensorflow as tf

    count, strengths = len(labels), len(L2_STRENGTHS)
    mean, scale = features.mean(0), features.std(0) + 1e-6
    x = tf.constant((features - mean) / scale, tf.float32)
    fold = np.random.default_rng(seed).permutation(count) % folds
    class_counts = np.bincount(labels, minlength=num_classes)
    balance = (count / (num_classes * np.maximum(class_counts, 1)))[labels]
    trains = np.tile((fold[None, :] != np.arange(folds)[:, None]) * balance[None, :], (strengths, 1))
    trains = tf.constant(trains, tf.float32)  # (strengths * folds, images): who trains each classifier, how much
    l2 = tf.constant(np.repeat(L2_STRENGTHS, folds)[:, None, None], tf.float32)
    y = tf.constant(labels, tf.int64)
    weights = tf.Variable(tf.zeros((strengths * folds, features.shape[1], num_classes)))
    biases = tf.Variable(tf.zeros((strengths * folds, 1, num_classes)))
    optimizer = keras.optimizers.Adam(0.01)

    def logits(inputs):
        return tf.einsum("nd,kdc->knc", inputs, weights) + biases

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.broadcast_to(y, trains.shape), logits(x))
            loss = tf.reduce_sum(tf.reduce_sum(losses * trains, 1) / tf.reduce_sum(trains, 1))
            loss += tf.reduce_sum(l2 * weights**2)
        optimizer.apply(tape.gradient(loss, [weights, biases]), [weights, biases])

    for _ in range(steps):
        step()
    every = logits(x).numpy().reshape(strengths, folds, count, num_classes)
    oof = every[:, fold, np.arange(count)]  # (strengths, images, classes)
    losses = [np.sum(balance * -np.log(np.clip(_own(_softmax(o), labels), 1e-12, 1))) for o in oof]
    best = int(np.argmin(losses))
    temperature = fit_temperature(oof[best], labels)
    held = logits(tf.constant((held_features - mean) / scale, tf.float32)).numpy()
    held = held.reshape(strengths, folds, len(held_features), num_classes)[best].mean(0)
    return _softmax(oof[best] / temperature), _softmax(held / temperature)
