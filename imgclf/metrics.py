"""Scores of a classifier beyond accuracy, and the choice of its threshold, from its probabilities.

Everything here is plain NumPy on (true labels, per-class probabilities), so training's
validation report and `predict.py --evaluate` compute the same figures the same way.
"""

import numpy as np


def balanced_accuracy(counts):
    """Mean recall over the classes of a confusion matrix (rows: true class); classes without images are skipped."""
    counts = np.asarray(counts, np.float64)
    support = counts.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(counts)[present] / support[present]))


def roc_curve(positive, scores):
    """(false positive rates, true positive rates, thresholds), one point per distinct score, highest first.

    A point's threshold t calls every score >= t positive; the curve starts at (0, 0).
    """
    positive = np.asarray(positive, bool)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    scores, positive = np.asarray(scores, np.float64)[order], positive[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # ties move the curve together
    true_positives = np.cumsum(positive)[last_of_each]
    false_positives = (last_of_each + 1) - true_positives
    tpr = np.r_[0.0, true_positives / max(1, positive.sum())]
    fpr = np.r_[0.0, false_positives / max(1, (~positive).sum())]
    return fpr, tpr, np.r_[np.inf, scores[last_of_each]]


def roc_auc(positive, scores):
    """Area under the ROC curve (the probability that a positive scores above a negative; ties count half)."""
    fpr, tpr, _ = roc_curve(positive, scores)
    return float(np.trapezoid(tpr, fpr))


def precision_recall_curve(positive, scores):
    """(precisions, recalls, thresholds), one point per distinct score, highest threshold first."""
    positive = np.asarray(positive, bool)
    fpr, tpr, thresholds = roc_curve(positive, scores)
    true_positives = tpr[1:] * positive.sum()
    called = true_positives + fpr[1:] * (~positive).sum()
    return true_positives / np.maximum(called, 1), tpr[1:], thresholds[1:]


def average_precision(positive, scores):
    """Average precision: the precision at each threshold weighted by the recall it adds (scikit-learn's definition)."""
    precision, recall, _ = precision_recall_curve(positive, scores)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def per_class_curves(true_labels, probabilities):
    """One-vs-rest (ROC AUC, average precision) of each class; two classes give the second class's only."""
    probabilities = np.asarray(probabilities)
    classes = [1] if probabilities.shape[1] == 2 else range(probabilities.shape[1])
    scores = {}
    for index in classes:
        positive = np.asarray(true_labels) == index
        if positive.all() or not positive.any():  # one class only in these images: no curve
            continue
        scores[index] = (
            roc_auc(positive, probabilities[:, index]),
            average_precision(positive, probabilities[:, index]),
        )
    return scores


def summary(true_labels, probabilities, counts):
    """The scores written into report.txt and metadata.json: balanced accuracy, ROC AUC, average precision.

    With more than two classes the AUC and AP are the means over the classes (one-vs-rest);
    both are None when the images hold only one class.
    """
    curves = per_class_curves(true_labels, probabilities)
    return {
        "balanced_accuracy": balanced_accuracy(counts),
        "roc_auc": float(np.mean([auc for auc, _ in curves.values()])) if curves else None,
        "average_precision": float(np.mean([ap for _, ap in curves.values()])) if curves else None,
    }


def best_balanced_threshold(positive, scores):
    """The threshold on the second class's probability with the best balanced accuracy on these images.

    Candidates are the midpoints between consecutive distinct scores, so the threshold
    sits in the middle of a gap between photos, not on one; among equally good ones the
    closest to 0.5 wins. The threshold stays at 0.5 unless the best gains more than one
    image of the smaller class over it: a validation set of a few dozen images would
    otherwise move it on noise (measured: 1000 cats and 100 dogs, 0.785 chosen for one
    cat more on validation, 96.5% balanced accuracy on Test_Set against 98.5% at 0.5).
    """
    positive = np.asarray(positive, bool)
    scores = np.asarray(scores, np.float64)
    values = np.unique(scores)
    # Also everything called positive, and nothing: better than any gap when the scores are upside down.
    candidates = np.unique(np.r_[0.5, (values[:-1] + values[1:]) / 2, values[0], np.nextafter(values[-1], np.inf)])
    called = scores[None, :] >= candidates[:, None]
    sensitivity = (called & positive).sum(axis=1) / max(1, positive.sum())
    specificity = (~called & ~positive).sum(axis=1) / max(1, (~positive).sum())
    balanced = (sensitivity + specificity) / 2
    one_image = 1 / (2 * max(1, min(positive.sum(), (~positive).sum())))
    if balanced.max() - balanced[candidates == 0.5][0] <= one_image + 1e-12:
        return 0.5
    best = np.flatnonzero(balanced >= balanced.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def threshold_for_recall(true_labels, scores, class_index, target):
    """The threshold on the second class's probability that keeps class `class_index`'s recall >= `target`
    on these images, giving the other class as much recall as it can.

    For the second class that is the highest such threshold; for the first, the lowest.
    """
    true_labels, scores = np.asarray(true_labels), np.asarray(scores, np.float64)
    members = np.sort(scores[true_labels == class_index])
    needed = int(np.ceil(target * len(members) - 1e-9))
    if needed == 0:
        return 0.0 if class_index == 0 else 1.0
    if class_index == 1:  # the `needed` highest-scoring members must reach the threshold
        return float(members[-needed])
    return float(np.nextafter(members[needed - 1], np.inf))  # the `needed` lowest must stay below it
