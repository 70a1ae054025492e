"""Accuracy figures and plots: confusion matrix, per-class report, training curves, ROC and PR curves."""

import numpy as np

from imgclf import metrics


def confusion_matrix(true_labels, predicted_labels, num_classes):
    """Counts[i, j] = images of class i predicted as class j."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (np.asarray(true_labels, np.int64), np.asarray(predicted_labels, np.int64)), 1)
    return counts


def per_class_metrics(counts):
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    true_positives = np.diag(counts).astype(np.float64)
    predicted = counts.sum(axis=0)
    actual = counts.sum(axis=1)
    precision = np.divide(true_positives, predicted, out=np.zeros_like(true_positives), where=predicted > 0)
    recall = np.divide(true_positives, actual, out=np.zeros_like(true_positives), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return precision, recall, f1, actual


def text_report(counts, class_names, scores=None, threshold=None):
    """Accuracy, a per-class precision/recall/F1/support table and the confusion matrix, as text.

    For two classes the second class counts as "positive": sensitivity is its
    recall and specificity the first class's recall. `scores` (`metrics.summary`)
    adds balanced accuracy, ROC AUC and average precision; `threshold` is a line
    saying which threshold labeled the images and where it came from.
    """
    precision, recall, f1, support = per_class_metrics(counts)
    total = counts.sum()
    accuracy = np.trace(counts) / total if total else 0.0
    width = max(12, *(len(name) for name in class_names))
    lines = [f"accuracy: {accuracy:.4f} ({np.trace(counts)}/{total})"]
    if scores:
        lines.append(f"balanced accuracy: {scores['balanced_accuracy']:.4f} (the mean of the classes' recalls)")
        one_vs_rest = "" if len(class_names) == 2 else ", mean of one-vs-rest"
        for key, name in (("roc_auc", "ROC AUC"), ("average_precision", "average precision")):
            if scores.get(key) is not None:
                lines.append(f"{name}: {scores[key]:.4f}{one_vs_rest}")
    if threshold:
        lines.append(threshold)
    lines.append("")
    lines.append(f"{'class':<{width}} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>9}")
    present = support > 0  # A class with no images here has no recall: it stays out of the averages.
    for i, name in enumerate(class_names):
        scores_of = f"{precision[i]:>9.4f} {recall[i]:>9.4f} {f1[i]:>9.4f}" if present[i] else f"{'-':>9} " * 3
        lines.append(f"{name:<{width}} {scores_of.rstrip():>29} {support[i]:>9d}")
    lines.append(
        f"{'macro avg':<{width}} {precision[present].mean():>9.4f} {recall[present].mean():>9.4f} "
        f"{f1[present].mean():>9.4f} {total:>9d}"
    )
    if not present.all():
        absent = ", ".join(f"'{name}'" for name, here in zip(class_names, present) if not here)
        lines.append(f"(no images of {absent} here: left out of the averages)")
    if len(class_names) == 2:
        lines.append("")
        lines.append(f"sensitivity (recall of '{class_names[1]}'): {recall[1]:.4f}")
        lines.append(f"specificity (recall of '{class_names[0]}'): {recall[0]:.4f}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)"]
    column = max(9, *(len(name) for name in class_names))
    lines.append(" " * width + " " + " ".join(f"{name:>{column}}" for name in class_names))
    for i, name in enumerate(class_names):
        lines.append(f"{name:<{width}} " + " ".join(f"{count:>{column}d}" for count in counts[i]))
    return "\n".join(lines) + "\n"


def plot_confusion_matrix(counts, class_names, path):
    """Writes the confusion matrix as a PNG with a count in every cell."""
    figure, axes = _figure(figsize=(1.2 * len(class_names) + 3, 1.2 * len(class_names) + 2.5))
    axes.imshow(counts, cmap="Blues")
    ticks = range(len(class_names))
    names = _drawable_names(class_names)
    axes.set_xticks(ticks, names, rotation=45, ha="right")
    axes.set_yticks(ticks, names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    threshold = counts.max() / 2
    for (row, column), count in np.ndenumerate(counts):
        axes.text(column, row, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    axes.set_title("Confusion matrix")
    _save(figure, path)


def plot_history(history, path):
    """Writes loss and accuracy per epoch, training vs validation, as a PNG."""
    figure, (loss_axes, accuracy_axes) = _figure(ncols=2, figsize=(10, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for axes, key in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.plot(epochs, history[key], label="training")
        if f"val_{key}" in history:
            axes.plot(epochs, history[f"val_{key}"], label="validation")
        axes.set_xlabel("epoch")
        axes.set_ylabel(key)
        axes.grid(alpha=0.3)
        axes.legend()
    _save(figure, path)


def plot_curves(true_labels, probabilities, class_names, threshold, roc_path, pr_path):
    """Writes the ROC and the precision-recall curves as two PNGs, the threshold in use marked on each.

    Two classes: the second class's curves; more: one curve per class against the rest.
    """
    probabilities = np.asarray(probabilities)
    binary = probabilities.shape[1] == 2
    names = _drawable_names(class_names)
    for path, kind in ((roc_path, "roc"), (pr_path, "pr")):
        figure, axes = _figure(figsize=(5.5, 5))
        for index in [1] if binary else range(len(class_names)):
            positive = np.asarray(true_labels) == index
            if positive.all() or not positive.any():
                continue
            scores = probabilities[:, index]
            if kind == "roc":
                x, y, thresholds = metrics.roc_curve(positive, scores)
                value = f"AUC {metrics.roc_auc(positive, scores):.3f}"
            else:
                y, x, thresholds = metrics.precision_recall_curve(positive, scores)
                value = f"AP {metrics.average_precision(positive, scores):.3f}"
            axes.plot(x, y, label=f"{names[index]} ({value})")
            if binary and threshold is not None:  # the point where scores >= threshold are called positive
                point = max(0, np.searchsorted(-thresholds, -threshold, side="right") - 1)
                axes.plot(x[point], y[point], "o", color="black", label=f"threshold {threshold:.3f}")
        if kind == "roc":
            axes.plot([0, 1], [0, 1], ":", color="grey")
            axes.set_xlabel("false positive rate (1 - specificity)")
            axes.set_ylabel("true positive rate (sensitivity)")
            axes.set_title("ROC curve" + ("" if binary else "s, one class against the rest"))
        else:
            axes.set_xlabel("recall")
            axes.set_ylabel("precision")
            axes.set_title("Precision-recall curve" + ("" if binary else "s, one class against the rest"))
        axes.set_xlim(-0.02, 1.02)
        axes.set_ylim(-0.02, 1.02)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right" if kind == "roc" else "lower left")
        _save(figure, path)


def _drawable_names(class_names):
    """The class names as the plot's fonts can draw them.

    Matplotlib's own font has no CJK, Arabic or other scripts' glyphs: a name it
    cannot draw (and no installed fallback font can either) is shown as
    "class N", its index, which report.txt maps to the full name.
    """
    from matplotlib import font_manager, ft2font, rcParams

    families = [*rcParams["font.sans-serif"], "Noto Sans CJK JP", "Noto Sans CJK SC", "WenQuanYi Zen Hei"]
    fonts = []
    for family in families:
        path = font_manager.findfont(family, fallback_to_default=False) if _installed(family) else None
        if path and path not in (font.fname for font in fonts):
            fonts.append(ft2font.FT2Font(path))

    def drawable(name):
        return all(char.isspace() or any(font.get_char_index(ord(char)) for font in fonts) for char in name)

    usable = [font.family_name for font in fonts]
    rcParams["font.sans-serif"] = usable or rcParams["font.sans-serif"]  # Fallback through every one of them.
    return [name if drawable(name) else f"class {index}" for index, name in enumerate(class_names)]


def _installed(family):
    from matplotlib import font_manager

    return any(entry.name == family for entry in font_manager.fontManager.ttflist)


def _figure(**kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(**kwargs)


def _save(figure, path):
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=100, format="png")
    plt.close(figure)
