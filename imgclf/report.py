"""Accuracy figures and plots: confusion matrix, per-class report, training curves."""

import numpy as np


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


def text_report(counts, class_names):
    """Accuracy, a per-class precision/recall/F1/support table and the confusion matrix, as text.

    For two classes the second class counts as "positive": sensitivity is its
    recall and specificity the first class's recall.
    """
    precision, recall, f1, support = per_class_metrics(counts)
    total = counts.sum()
    accuracy = np.trace(counts) / total if total else 0.0
    width = max(12, *(len(name) for name in class_names))
    lines = [f"accuracy: {accuracy:.4f} ({np.trace(counts)}/{total})", ""]
    lines.append(f"{'class':<{width}} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>9}")
    for i, name in enumerate(class_names):
        lines.append(f"{name:<{width}} {precision[i]:>9.4f} {recall[i]:>9.4f} {f1[i]:>9.4f} {support[i]:>9d}")
    lines.append(f"{'macro avg':<{width}} {precision.mean():>9.4f} {recall.mean():>9.4f} {f1.mean():>9.4f} {total:>9d}")
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
