"""Scoring a trained model as training ends: the threshold chosen on the validation images, the test
images scored once, report.txt and the plots, and the closing summary line."""

import os

import numpy as np

from imgclf import artifacts, metrics, outputs, report, runtimes
from imgclf.cli import UsageError


def evaluate(run, config, split, inputs, history, leaderboard=""):
    """Chooses the threshold on the validation images, then scores the test images once (when there are
    any) at that threshold; writes report.txt, the confusion matrix and the ROC and PR curves of the
    images that scored (the validation images when there is no test set). `run` (a runtimes runner) labels
    the rows of `inputs` (images or features) as the saved model does. `leaderboard` (text) ends the report.

    Returns:
        {"threshold", "how" (it was chosen), "figures": {role: accuracy and scores}, "scored": {role:
        {"labels", "probabilities", "counts"}}}, for the roles "validation" and (with a test set) "test".
    """
    validation_labels, validation_probabilities = probabilities_of(run, split, split.validation, inputs)
    threshold, how = choose_threshold(config, split.class_names, validation_labels, validation_probabilities)
    roles = [("validation", split.validation_source, validation_labels, validation_probabilities)]
    if len(split.test):
        roles.append(("test", split.test_source, *probabilities_of(run, split, split.test, inputs)))
    figures, sections, scored = {}, [], {}
    for role, source, true_labels, probabilities in roles:
        # The same labelling rule as predict.py, at the threshold saved with the model.
        predicted, _ = outputs.label_rows(probabilities, threshold)
        counts = report.confusion_matrix(true_labels, predicted, len(split.class_names))
        scores = metrics.summary(true_labels, probabilities, counts)
        accuracy = float(np.trace(counts) / counts.sum())
        figures[role] = {"source": source, "images": int(counts.sum()), "accuracy": accuracy, **scores}
        scored[role] = {"labels": true_labels, "probabilities": probabilities, "counts": counts}
        threshold_line = f"threshold: {threshold:.4f} ({how})" if threshold is not None else None
        sections.append(
            f"== {role}: {source} ==\n" + report.text_report(counts, split.class_names, scores, threshold_line)
        )
    text = _provenance(split, threshold) + "\n" + "\n".join(reversed(sections))
    if leaderboard:
        text += f"\n== recipes tried (validation images) ==\n{leaderboard}"
    staged = artifacts.staged(config.model_dir)
    artifacts.write_text(os.path.join(staged, "report.txt"), text)
    with artifacts.atomic_path(os.path.join(staged, "training_curves.png")) as temporary:
        report.plot_history(history, temporary)
    with (
        artifacts.atomic_path(os.path.join(staged, "confusion_matrix.png")) as matrix,
        artifacts.atomic_path(os.path.join(staged, "roc_curve.png")) as roc,
        artifacts.atomic_path(os.path.join(staged, "pr_curve.png")) as pr,
    ):
        report.plot_confusion_matrix(counts, split.class_names, matrix)  # of the images that scored: the last role
        report.plot_curves(true_labels, probabilities, split.class_names, threshold, roc, pr)
    print(f"\nReport (also in {os.path.join(config.model_dir, 'report.txt')}):\n{text}")
    return {"threshold": threshold, "how": how, "figures": figures, "scored": scored}


def probabilities_of(run, split, indices, inputs):
    """(true class indices, per-class probabilities) of the files at `indices`, `run` (a runtimes runner) on their
    rows of `inputs`."""
    return split.labels[indices], outputs.class_probabilities(runtimes.outputs_of(run, inputs, indices))


def validation_scores(truth, probabilities):
    """Accuracy, balanced accuracy and mean cross-entropy of `probabilities` (one row per image) against the
    true class indices: the most probable class (two classes: from 0.5, before any threshold is chosen),
    the loss unweighted. What `auto` chooses candidates by, and --tta decides on."""
    counts = report.confusion_matrix(truth, outputs.label_rows(probabilities)[0], probabilities.shape[1])
    return {
        "accuracy": round(float(np.trace(counts) / counts.sum()), 4),
        "balanced_accuracy": round(metrics.balanced_accuracy(counts), 4),
        "loss": round(float(-np.mean(np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-12, 1)))), 4),
    }


def _provenance(split, threshold):
    chose = "the best epoch" + (" and the threshold" if threshold is not None else "")
    lines = [f"chosen on: {split.validation_source}, {len(split.validation)} images ({chose})"]
    if len(split.test):
        lines.append(f"scored on: {split.test_source}, {len(split.test)} images, once, after training")
    else:
        lines.append(
            "scored on: the same validation images (no test set, so these figures are optimistic: add a "
            "Test_Set/ or pass --test-split 0.2)"
        )
    return "\n".join(lines) + "\n"


def check_threshold_flags(config, class_names):
    """Refuses --threshold and --target-recall where they cannot apply, before any training."""
    if len(class_names) != 2 and (config.threshold != "auto" or config.target_recall):
        flag = "--target-recall" if config.target_recall else "--threshold"
        raise UsageError(
            f"`{flag}` applies to two classes; there are {len(class_names)}, and the most probable is chosen. "
            f"Leave {flag} out."
        )
    target = config.target()
    if target and target[0] not in class_names:
        raise UsageError(f"`--target-recall` names class '{target[0]}', which is not one of {', '.join(class_names)}.")


def choose_threshold(config, class_names, true_labels, probabilities):
    """(threshold, how it was chosen) for two classes from the validation probabilities; (None, "") for more."""
    if len(class_names) != 2:
        return None, ""
    positive = probabilities[:, 1]
    target = config.target()
    if target:
        name, recall = target
        threshold = metrics.threshold_for_recall(true_labels, positive, class_names.index(name), recall)
        return threshold, f"--target-recall: keeps the recall of '{name}' >= {recall:g} on the validation images"
    if config.threshold != "auto":
        return float(config.threshold), "--threshold"
    threshold = metrics.best_balanced_threshold(true_labels == 1, positive)
    return threshold, "--threshold auto: the best balanced accuracy on the validation images"


def print_summary(metadata, model_dir):
    validation = metadata["validation"]
    training = metadata["training"]
    test = metadata.get("test")
    scored = (
        f"Test accuracy {test['accuracy']:.4f} (balanced {test['balanced_accuracy']:.4f}) on {test['images']} "
        f"images ({test['source']}, scored once); validation accuracy {validation['accuracy']:.4f}"
        if test
        else f"Validation accuracy {validation['accuracy']:.4f} (balanced {validation['balanced_accuracy']:.4f})"
    )
    print(
        f"{scored} on {validation['images']} images ({validation['source']}); recipe {training['recipe']}, best "
        f"epoch {training['best_epoch']} of {training['epochs_run']}; {training['seconds']:.0f} s in all."
    )
    print(f"Model written to {os.path.join(model_dir, artifacts.MODEL_FILE)} (+ weights, metadata, reports).")
