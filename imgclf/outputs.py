"""The output rule, in one place: how many output units, which loss, how labels are encoded, how
outputs become a class.

Two classes end in one sigmoid unit giving the probability of the second class,
which is chosen from `DEFAULT_THRESHOLD` on (binary cross-entropy, float labels
shaped like the output); three or more end in a softmax (sparse categorical
cross-entropy, integer labels) and the most probable class is chosen.
"""

import numpy as np

DEFAULT_THRESHOLD = 0.5
# `--class-weight auto` weights the classes once the largest has this many times the images of the smallest.
IMBALANCE_RATIO = 1.5


def is_binary(num_classes):
    return num_classes == 2


def units(num_classes):
    """Output units of the last layer."""
    return 1 if is_binary(num_classes) else num_classes


def activation(num_classes):
    return "sigmoid" if is_binary(num_classes) else "softmax"


def loss(num_classes):
    return "binary_crossentropy" if is_binary(num_classes) else "sparse_categorical_crossentropy"


def fits(output_units, num_classes):
    """True when a model with `output_units` outputs can label `num_classes` classes.

    Models made here have `units(num_classes)`; a Keras 2 tutorial model may end
    in a two-unit softmax for two classes, which is just as good.
    """
    return num_classes >= 2 and output_units in (units(num_classes), num_classes)


def encode_labels(labels, num_classes):
    """Class indices as the loss wants them: float column for one sigmoid unit, int32 otherwise."""
    labels = np.asarray(labels)
    return labels.astype(np.float32)[:, None] if is_binary(num_classes) else labels.astype(np.int32)


def label_rows(outputs, threshold=DEFAULT_THRESHOLD):
    """(class index, confidence) for each row of model outputs (one sigmoid unit, or one unit per class).

    With two classes the second is chosen when its probability reaches `threshold`.
    """
    outputs = np.asarray(outputs)
    if outputs.shape[1] <= 2:
        positive = outputs[:, -1]
        chosen = (positive >= threshold).astype(np.int64)
        confidence = np.where(chosen == 1, positive, 1.0 - positive)
        return chosen, confidence
    return outputs.argmax(axis=1), outputs.max(axis=1)


def class_probabilities(outputs):
    """Per-class probabilities; a single sigmoid output p becomes (1 - p, p)."""
    outputs = np.asarray(outputs)
    if outputs.shape[1] == 1:
        return np.concatenate([1.0 - outputs, outputs], axis=1)
    return outputs


def class_weights(labels, num_classes, mode="auto"):
    """Loss weight of each class for `--class-weight` auto|none, or None for no weighting.

    auto: inverse class frequency, scaled so the weights average 1 over the images
    (n / (classes * count), as scikit-learn's "balanced"), once the largest class has
    at least IMBALANCE_RATIO times the images of the smallest.
    """
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)
    if mode == "none" or counts.max() < IMBALANCE_RATIO * counts.min():
        return None
    return counts.sum() / (num_classes * counts)
