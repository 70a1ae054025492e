"""What is wrong with the data, and where the model fails: duplicates and leaks, top losses, suspect labels.

Each finding is a list of plain records, written to a CSV in the model folder and
shown on the report page (`imgclf/webpage.py`).
"""

import csv
import dataclasses
import io
import os
import sys
import time

import numpy as np

from imgclf import artifacts, duplicates, gradcam, outputs, runtimes, suspects, webpage
from imgclf import images as image_io
from imgclf.cli import UsageError

DUPLICATES_FILE = "duplicates.csv"
TOP_LOSSES_FILE = "top_losses.csv"
SUSPECT_LABELS_FILE = "suspect_labels.csv"
REPORT_PAGE = "report.html"
REPORT_FILES = [DUPLICATES_FILE, TOP_LOSSES_FILE, SUSPECT_LABELS_FILE, REPORT_PAGE]  # what a training run writes here
TOP_LOSSES = 16  # the held-out images with the highest loss, shown with Grad-CAM
HELD_OUT = ("validation", "test")


@dataclasses.dataclass(frozen=True)
class Copy:
    """`path` (index) is a copy of `duplicate_of` (index): an exact copy or the same picture re-encoded."""

    path: int
    duplicate_of: int
    kind: str
    similarity: float


def find_copies(thumbnails, paths, unreadable=()):
    """The duplicate pairs (`duplicates.Pair`) among the decoded images, leaving out the unreadable files."""
    usable = np.ones(len(paths), bool)
    usable[list(unreadable)] = False
    return duplicates.find(thumbnails, paths, usable)


def oriented(pairs, parts):
    """`pairs` as `Copy`s whose `duplicate_of` is the image that trains (of two held-out images, the first),
    so a leak reads "this test image is a copy of that training image".

    Args:
        parts: {index: "training" | "validation" | "test"} of every readable file.
    """
    rank = {"training": 0, "validation": 1, "test": 2}
    copies = []
    for pair in pairs:
        first, second = sorted((pair.first, pair.second), key=lambda index: (rank[parts[index]], index))
        copies.append(Copy(second, first, pair.kind, pair.similarity))
    return copies


def leaked(copies, parts, role):
    """The `role` images (validation or test) that are copies of images in another part (training, or for a
    test image also validation), in file order."""
    return sorted({c.path for c in copies if parts[c.path] == role != parts[c.duplicate_of]})


def write_copies(copies, paths, parts, model_dir):
    """Writes duplicates.csv: path, duplicate_of, kind, similarity and the part of each."""
    rows = [
        [paths[c.path], paths[c.duplicate_of], c.kind, f"{c.similarity:.3f}", parts[c.path], parts[c.duplicate_of]]
        for c in copies
    ]
    header = ["path", "duplicate_of", "kind", "similarity", "path_part", "duplicate_of_part"]
    _write_csv(os.path.join(model_dir, DUPLICATES_FILE), header, rows)


def leak_warnings(copies, parts, sources, model_dir):
    """One line for each held-out role with copies of training images in it: how many, and what it means."""
    listed = os.path.join(model_dir, DUPLICATES_FILE)
    lines = []
    for role in HELD_OUT:
        found = leaked(copies, parts, role)
        if found:
            meaning = "the test accuracy is overstated" if role == "test" else "the best epoch is chosen on them"
            others = "training or validation images" if role == "test" else "training images"
            lines.append(
                f"{len(found)} {role} image(s) ({sources[role]}) are copies of {others}, so {meaning}; "
                f"they are listed in {listed}. Remove them from one of the folders."
            )
    return lines


def check_leaks(copies, paths, parts, sources, model_dir, strict):
    """Prints the copies found; with `strict`, refuses test images that are copies of training images (exit 2).

    `sources`: {role: where its images come from, e.g. "Test_Set"}.
    """
    listed = os.path.join(model_dir, DUPLICATES_FILE)
    within = sum(1 for c in copies if parts[c.path] == parts[c.duplicate_of] == "training")
    test_leaks = leaked(copies, parts, "test")
    if strict and test_leaks:
        first = next(c for c in copies if c.path == test_leaks[0] and parts[c.duplicate_of] != "test")
        raise UsageError(
            f"{paths[first.path]}: a copy of the {parts[first.duplicate_of]} image {paths[first.duplicate_of]} "
            f"({len(test_leaks)} {sources['test']} image(s) in all are copies of training or validation images). "
            "Remove them from one of the folders, or train without --strict to be warned only."
        )
    print(
        f"Duplicates: {len(copies)} pair(s) of copies found ({within} within the training images), listed in {listed}."
    )
    for line in leak_warnings(copies, parts, sources, model_dir):
        print("Warning: " + line)


def top_losses(true_labels, probabilities, count=TOP_LOSSES):
    """Indices (into the rows given) of the `count` highest losses, highest first: the most confident mistakes."""
    losses = _losses(true_labels, probabilities)
    order = np.argsort(-losses, kind="stable")
    return order[:count], losses[order[:count]]


def _losses(true_labels, probabilities):
    probabilities = np.asarray(probabilities)
    true_probability = probabilities[np.arange(len(probabilities)), np.asarray(true_labels)]
    return -np.log(np.clip(true_probability, 1e-7, 1.0))


def write_top_losses(records, model_dir, name=TOP_LOSSES_FILE):
    """Writes top_losses.csv (or `name`) from `records`: dicts with path, part, true, predicted, confidence,
    probability_of_true, loss."""
    header = ["path", "part", "true_label", "predicted_label", "confidence", "probability_of_true", "loss"]
    rows = [
        [r["path"], r["part"], r["true"], r["predicted"], f"{r['confidence']:.4f}", f"{r['probability_of_true']:.4f}",
         f"{r['loss']:.4f}"]
        for r in records
    ]  # fmt: skip
    _write_csv(os.path.join(model_dir, name), header, rows)


def write_suspects(records, model_dir):
    """Writes suspect_labels.csv from `records`: dicts with path, part, label, suggested, probability_of_label,
    probability_of_suggested, judged_by."""
    header = ["path", "part", "label", "suggested_label", "probability_of_label", "probability_of_suggested",
              "judged_by"]  # fmt: skip
    rows = [
        [r["path"], r["part"], r["label"], r["suggested"], f"{r['probability_of_label']:.4f}",
         f"{r['probability_of_suggested']:.4f}", r["judged_by"]]
        for r in records
    ]  # fmt: skip
    _write_csv(os.path.join(model_dir, SUSPECT_LABELS_FILE), header, rows)


def _write_csv(path, header, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    artifacts.write_text(path, buffer.getvalue())


DISPLAY_SIZE = 224  # pixels of the pictures on the report page and of --explain's overlays
THUMBNAIL_DISPLAY = 160


def write_training_report(chosen, run, config, split, decoded, copies, evaluation, metadata):
    """Writes top_losses.csv, suspect_labels.csv and report.html of a training run.

    `chosen` is the recipe's result (`recipes.Result`: the whole network for Grad-CAM,
    and what trained with its inputs), `run` the runtimes runner of its trainee on those inputs (the suspects
    check labels the training images with it), `decoded` the first decoding pass (with a
    pretrained --arch, the frozen ImageNet features: the out-of-fold judges' input),
    `evaluation` what `evaluation.evaluate` returned, `metadata` what is saved with the model.
    A failure here is printed and leaves the model to be saved: a report is never worth a training run.
    """
    try:
        _write_training_report(chosen, run, config, split, decoded, copies, evaluation, metadata)
    except Exception as error:  # noqa: BLE001 - whatever went wrong, the trained model is saved next
        print(f"Warning: the report page could not be written ({type(error).__name__}: {error}).", file=sys.stderr)


def _write_training_report(chosen, run, config, split, decoded, copies, evaluation, metadata):
    model = chosen.model
    names, model_dir, parts = split.class_names, config.model_dir, split.parts()
    staged = artifacts.staged(model_dir)  # written there, committed beside the model; messages name model_dir
    grayscale = metadata["color_mode"] == "grayscale"
    threshold = evaluation["threshold"]
    roles = {"validation": split.validation, "test": split.test}
    held = [(role, roles[role], scored) for role, scored in evaluation["scored"].items()]

    # The top losses: every held-out image, ranked by its loss, with Grad-CAM of the class chosen.
    indices = np.concatenate([indices for _, indices, _ in held])
    labels = np.concatenate([scored["labels"] for _, _, scored in held])
    probabilities = np.concatenate([scored["probabilities"] for _, _, scored in held])
    chosen_rows, losses = top_losses(labels, probabilities)
    predicted, confidence = outputs.label_rows(probabilities[chosen_rows], threshold or outputs.DEFAULT_THRESHOLD)
    loss_records = [
        {"path": split.paths[indices[row]], "part": parts[indices[row]], "true": names[labels[row]],
         "predicted": names[predicted[n]], "confidence": float(confidence[n]),
         "probability_of_true": float(probabilities[row, labels[row]]), "loss": float(losses[n])}
        for n, row in enumerate(chosen_rows)
    ]  # fmt: skip
    write_top_losses(loss_records, staged)
    explain_records(model, loss_records, predicted, config.image_size, grayscale)

    # Possible label errors: each label judged by models that did not learn it (see imgclf/suspects.py).
    features = decoded.inputs if decoded.inputs.ndim == 2 else None
    findings = suspects.find(
        split.labels, split.train, {role: (indices, scored["probabilities"]) for role, indices, scored in held},
        outputs.class_probabilities(runtimes.outputs_of(run, chosen.inputs, split.train)), features,
    )  # fmt: skip
    suspect_records = [
        {"path": split.paths[index], "part": parts[index], "label": names[split.labels[index]],
         "suggested": names[suggested], "probability_of_label": own, "probability_of_suggested": other,
         "judged_by": how}
        for index, suggested, own, other, how in findings.rows
    ]  # fmt: skip
    write_suspects(suspect_records, staged)
    suspects_note = _suspects_note(findings, metadata["validation"]["accuracy"])
    print(f"Possible label errors: {suspects_note} Listed in {os.path.join(model_dir, SUSPECT_LABELS_FILE)}.")

    sources = {"validation": split.validation_source, "test": split.test_source}
    page = webpage.Page(
        title="Training report",
        subtitle=f"{os.path.abspath(model_dir)} · {time.strftime('%Y-%m-%d %H:%M')}",
        summary=_training_summary(metadata, split, copies, findings),
        warnings=leak_warnings(copies, parts, sources, model_dir),
        class_names=names,
        balance={
            f"{role} ({source})": np.bincount(split.labels[indices], minlength=len(names)).tolist()
            for role, indices, source in (
                ("training", split.train, "Training_Set"),
                ("validation", split.validation, split.validation_source),
                ("test", split.test, split.test_source),
            )
            if len(indices)
        },
        scores=[_score_block(role, metadata[role], scored["counts"], threshold) for role, _, scored in reversed(held)],
        plots=_plots(staged, ("training_curves", "roc_curve", "pr_curve")),  # the confusion matrix is a table
        losses=loss_records,
        losses_note=(
            f"The {len(loss_records)} held-out images with the highest loss (the most confident mistakes first), "
            "each with Grad-CAM: red is where the network looked for the class it chose. Listed in "
            f"{TOP_LOSSES_FILE}."
        ),
        suspects=_with_pictures(suspect_records[: webpage.SHOWN_SUSPECTS], grayscale),
        suspects_note=(
            f"{suspects_note} Training images are judged out of fold, on the frozen ImageNet features, when training "
            "began from a pretrained network (else by the trained model itself), held-out images by the trained "
            f"model; each judge is calibrated on images it did not train on. Check their folders; all are in "
            f"{SUSPECT_LABELS_FILE}."
        ),
        copies=_copy_pictures(copies[: webpage.SHOWN_PAIRS], split.paths, parts, grayscale),
        copies_note=(
            f"{len(copies)} pair(s) of copies (exact: the same bytes; near: the same picture re-encoded, resized "
            f"or recompressed), all in {DUPLICATES_FILE}."
        ),
        skipped=[(split.paths[index], reason) for index, reason in decoded.errors],
        recipes=metadata["leaderboard"],
    )
    webpage.write(page, os.path.join(staged, REPORT_PAGE))
    print(f"Report page: {os.path.join(model_dir, REPORT_PAGE)} (open it in a browser).")


def explain_records(model, records, classes, image_size, grayscale, resize="bilinear"):
    """Adds to each record an "image": its file with Grad-CAM (of `classes`) laid over it; without a
    Keras model (an exported one) or a convolutional one, the plain picture."""
    if not records:
        return
    try:
        explainer = None if model is None else gradcam.GradCam(model)
    except UsageError:  # a network without a convolutional feature map: the plain pictures
        explainer = None
    shown = np.stack([image_io.load_image(r["path"], DISPLAY_SIZE, grayscale=grayscale) for r in records])
    heatmaps = None
    if explainer is not None:
        # The model's own input, decoded again only when it differs from the picture shown.
        same = image_size == DISPLAY_SIZE and resize == "bilinear"
        pixels = (
            shown
            if same
            else np.stack([image_io.load_image(r["path"], image_size, resize, grayscale) for r in records])
        )
        heatmaps = explainer.heatmaps(pixels, classes)
    for n, record in enumerate(records):
        record["image"] = shown[n] if heatmaps is None else gradcam.overlay(shown[n], heatmaps[n])


def _chance(findings):
    """How many training flags chance alone gives: "about N", or "few if any (fewer than about N)"."""
    if findings.mistakes:
        return f"about {findings.chance:.0f}"
    return f"few if any (fewer than about {max(1, round(findings.training_images / findings.validation_images))})"


def _suspects_note(findings, accuracy):
    """How many labels are suspect, and how many flags this model's confident mistakes would give by chance."""
    return (
        f"{len(findings.rows)} image(s) whose label gets at most {suspects.SUSPECT_PROBABILITY:.0%} calibrated "
        f"probability, {findings.training_flags} of them training images. By chance: at this model's validation "
        f"accuracy ({accuracy:.1%}) {findings.mistakes} of {findings.validation_images} validation images got "
        f"such a confident mistake, so chance alone gives {_chance(findings)} flag(s) among the training images "
        "even if every label is right (an estimate: a label error among the validation images counts there too); "
        "many more than that point at real label errors."
    )


def _with_pictures(records, grayscale):
    for record in records:
        record["image"] = image_io.load_image(record["path"], THUMBNAIL_DISPLAY, grayscale=grayscale)
    return records


def _copy_pictures(copies, paths, parts, grayscale):
    def load(index):
        return image_io.load_image(paths[index], THUMBNAIL_DISPLAY, grayscale=grayscale)

    return [
        {"image": load(c.path), "other_image": load(c.duplicate_of), "path": paths[c.path],
         "other_path": paths[c.duplicate_of], "part": parts[c.path], "other_part": parts[c.duplicate_of],
         "kind": c.kind, "similarity": c.similarity}
        for c in copies
    ]  # fmt: skip


def _plots(model_dir, stems):
    captions = {"training_curves": "Loss and accuracy per epoch", "confusion_matrix": "Confusion matrix",
                "roc_curve": "ROC curve", "pr_curve": "Precision-recall curve"}  # fmt: skip
    found = [
        (
            next((text for key, text in captions.items() if stem.endswith(key)), stem),
            os.path.join(model_dir, stem + ".png"),
        )
        for stem in stems
    ]
    return [(caption, path) for caption, path in found if os.path.isfile(path)]


def score_lines(figures, threshold):
    """The headline figures of one scored set, as lines for the page."""
    lines = [f"accuracy {figures['accuracy']:.4f}, balanced accuracy {figures['balanced_accuracy']:.4f}"]
    if figures.get("roc_auc") is not None:
        lines.append(f"ROC AUC {figures['roc_auc']:.4f}, average precision {figures['average_precision']:.4f}")
    if threshold is not None:
        lines.append(f"threshold {threshold:.4f}")
    return lines


def _score_block(role, figures, counts, threshold):
    return f"{role}: {figures['source']}, {figures['images']:,} images", counts, score_lines(figures, threshold)


def _training_summary(metadata, split, copies, findings):
    training, validation, test = metadata["training"], metadata["validation"], metadata.get("test")
    rows = [("classes", ", ".join(split.class_names))]
    if test:
        rows.append(("test accuracy", f"{test['accuracy']:.2%} (balanced {test['balanced_accuracy']:.2%}) on "
                                      f"{test['images']:,} images of {test['source']}, scored once"))  # fmt: skip
    rows += [
        ("validation accuracy", f"{validation['accuracy']:.2%} (balanced {validation['balanced_accuracy']:.2%}) on "
                                f"{validation['images']:,} images ({validation['source']})"),
        ("images", f"{len(split.train):,} training, {len(split.validation):,} validation, {len(split.test):,} test, "
                   f"{training['skipped_files']:,} skipped (unreadable)"),
        ("network", f"{metadata['architecture']}, {metadata['image_size']} px, {metadata['color_mode']}"),
        ("test-time flip", ("kept" if metadata["test_time_flip"]["used"] else "not kept")
                           + f" ({metadata['test_time_flip']['why']})"),
        ("training", f"{training['recipe']}: {training['epochs_run']} epochs (best: {training['best_epoch']}), "
                     f"{training['seconds'] / 60:.1f} min in all"),
        ("where it ran", f"{metadata['hardware']}: {metadata['devices']}, {metadata['trained_with']} arithmetic"),
        ("threshold", "most probable class" if metadata["threshold"] is None
                      else f"{metadata['threshold']:.4f} ({metadata['threshold_chosen_by']})"),
        ("duplicates", f"{len(copies):,} pair(s) of copies"),
        ("possible label errors", f"{len(findings.rows):,}, {findings.training_flags:,} of them training images "
                                  f"(by chance: {_chance(findings)})"),
    ]  # fmt: skip
    return rows


def write_evaluation_report(paths, true_labels, probabilities, figures, counts, metadata, threshold, model, stem,
                            skipped):  # fmt: skip
    """Writes `<stem>_report.html` and `<stem>_top_losses.csv` of `predict.py --evaluate`: the scores, the
    plots written beside the CSV and the top losses (with Grad-CAM when `model` is a Keras model)."""
    names = metadata["class_names"]
    chosen_rows, losses = top_losses(true_labels, probabilities)
    predicted, confidence = outputs.label_rows(probabilities[chosen_rows], threshold or outputs.DEFAULT_THRESHOLD)
    records = [
        {"path": paths[row], "part": "evaluated", "true": names[true_labels[row]], "predicted": names[predicted[n]],
         "confidence": float(confidence[n]), "probability_of_true": float(probabilities[row, true_labels[row]]),
         "loss": float(losses[n])}
        for n, row in enumerate(chosen_rows)
    ]  # fmt: skip
    folder, name = os.path.split(stem)
    write_top_losses(records, folder or ".", f"{name}_{TOP_LOSSES_FILE}")
    grayscale = metadata.get("color_mode") == "grayscale"
    explain_records(model, records, predicted, metadata["image_size"], grayscale, metadata.get("resize", "bilinear"))
    if model is None:
        how = "(no Grad-CAM: an exported model has no gradients)"
    else:
        how = "each with Grad-CAM: red is where the network looked for the class it chose"
    page = webpage.Page(
        title="Evaluation report",
        subtitle=f"{figures['source']} · {time.strftime('%Y-%m-%d %H:%M')}",
        summary=[
            ("classes", ", ".join(names)),
            (
                "accuracy",
                f"{figures['accuracy']:.2%} (balanced {figures['balanced_accuracy']:.2%}) on "
                f"{figures['images']:,} images of {figures['source']}",
            ),
            ("model", f"{metadata.get('architecture', 'Keras 2 model')}, {metadata['image_size']} px"),
            ("threshold", "most probable class" if threshold is None else f"{threshold:.4f}"),
            ("skipped files", f"{len(skipped):,}"),
        ],  # fmt: skip
        class_names=names,
        balance={"evaluated": np.bincount(true_labels, minlength=len(names)).tolist()},
        scores=[(f"{figures['source']}, {figures['images']:,} images", counts, score_lines(figures, threshold))],
        plots=_plots(folder or ".", [f"{name}_{plot}" for plot in ("roc_curve", "pr_curve")]),
        losses=records,
        losses_note=f"The {len(records)} images with the highest loss, {how}.",
        skipped=skipped,
    )
    webpage.write(page, f"{stem}_report.html")
