"""Labelling files with a trained model: CSV, evaluation against class folders, sorting copies."""

import contextlib
import csv
import filecmp
import io
import os
import shutil
import time

import numpy as np

from imgclf import artifacts, cli, decoding, folders, loading, metrics, outputs, report, runtimes
from imgclf import images as image_io
from imgclf.cli import UsageError
from imgclf.progress import Progress


def convert(model, metadata, model_file, folder):
    """Writes `model` in today's format (model.h5, model.weights.h5, metadata.json) into `folder`."""
    folders.check_writable_folder(folder, "--convert")
    with artifacts.one_writer(folder, "--convert"):
        artifacts.save_model(model, folder, {**metadata, "converted_from": os.path.abspath(model_file)})
    print(f"Converted {model_file} into {folder}/. Use it with: python predict.py --model-dir {folder}")
    return 0


def safe_cell(value):
    """A CSV cell that a spreadsheet will show as text, never run as a formula."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def predictions_csv(rows, class_names):
    """The predictions as CSV text: path, label, confidence, prob_<class>..., error."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(_header(class_names))
    return buffer.getvalue() + _csv_text(rows)


def predict(config):
    """Labels every input file; returns exit status 0 (all labeled) or 1 (some unreadable).

    Rows go into the CSV batch by batch, each batch written whole and flushed, so
    an interrupted run keeps every labeled row and `--resume` labels only the rest.
    """
    started = time.time()
    if config.convert or config.export:
        return _convert_or_export(config)
    run, metadata, model = loading.runner(config)
    if config.explain and model is None:
        raise UsageError(
            f"--explain needs the Keras model (model.h5), not {loading.model_path(config)}: exported files have no "
            "gradients to compute it from. Leave --model out, or pass the model.h5."
        )
    load_seconds = time.time() - started
    class_names = metadata["class_names"]
    if config.threshold is not None and len(class_names) != 2:
        raise UsageError(
            f"`--threshold` applies to two classes; this model has {len(class_names)}, and the most probable is "
            "chosen. Leave --threshold out."
        )
    true_labels = None
    if config.evaluate:
        if len(config.input) != 1 or not os.path.isdir(config.input[0]):
            raise UsageError("--evaluate needs one --input folder holding one sub-folder per class.")
        paths, true_labels, _ = folders.scan_class_folders(config.input[0], classes=class_names, subset=True)
    else:
        paths = folders.list_inputs(config.input, [config.sort_into, config.explain])
    folders.check_writable_folder(os.path.dirname(os.path.abspath(config.output)), "--output")
    if config.sort_into:
        if any(os.path.realpath(config.sort_into) == os.path.realpath(item) for item in config.input):
            raise UsageError(f"--sort-into {config.sort_into}: that is an --input folder. Choose another folder.")
        folders.check_writable_folder(config.sort_into, "--sort-into")
    explainer = _explanations(config, model, paths, metadata)

    done = _start_csv(config.output, class_names, paths, config.resume)
    todo = [path for path in paths if path not in done]
    if done:
        print(f"--resume: {len(done)} file(s) already labeled in {config.output}; labeling the other {len(todo)}.")
    errors = _label(run, todo, metadata, config, done, explainer)
    seconds = max(time.time() - started - load_seconds, 1e-9)
    print(
        f"Labeled {len(todo) - errors} of {len(todo)} files in {seconds:.1f} s ({len(todo) / seconds:.0f} images/s; "
        f"model loaded in {load_seconds:.1f} s); predictions written to {config.output}."
    )
    if errors:
        print(f"{errors} file(s) could not be read; their reasons are in the 'error' column.")
    chosen_labels = [done.get(path, -1) for path in paths]
    if config.sort_into:
        _sort_copies(paths, chosen_labels, class_names, config.sort_into)
    if config.explain:
        print(
            f"Grad-CAM overlays written to {os.path.join(config.explain, '')} (red: where the network looked for the "
            "label)."
        )
    if true_labels is not None:
        threshold = loading.threshold(config, metadata)
        if model is None and not runtimes.is_exported(loading.model_path(config)):  # its Grad-CAM of the top losses
            model = loading.load_for_prediction(config)[0]
        _evaluation_report(paths, np.array(true_labels), np.array(chosen_labels), metadata, config, threshold, model)
    return 1 if errors else 0


def _convert_or_export(config):
    from imgclf import legacy

    if runtimes.is_exported(loading.model_path(config)):
        raise UsageError(f"--convert and --export need the Keras model (model.h5), not {loading.model_path(config)}.")
    if config.convert:
        return convert(*loading.load_for_prediction(config), config.convert)
    folder = os.path.dirname(os.path.abspath(loading.model_path(config)))
    if os.path.isdir(folder):  # else load_for_prediction says what is missing
        folders.check_writable_folder(folder, "--export")
    with artifacts.one_writer(folder, "--model-dir") if os.path.isdir(folder) else contextlib.nullcontext():
        # Under the lock: no training commits meanwhile.
        model, metadata, model_file = loading.load_for_prediction(config)
        if legacy.is_legacy_file(model_file) or not artifacts.has_metadata(model_file):
            raise UsageError(
                f"--export: {model_file} has no metadata.json of its own. Convert it first "
                "(--convert FOLDER), then export the converted model (--model-dir FOLDER --export ...)."
            )
        from imgclf import export

        return export.export(model, metadata, model_file, config.export, config.calibration)


def _explanations(config, model, paths, metadata):
    """--explain's writer of Grad-CAM overlays for `paths`, or None without --explain."""
    if not config.explain:
        return None
    folders.check_writable_folder(config.explain, "--explain")
    from imgclf import gradcam

    return _Explanations(gradcam.GradCam(model), paths, metadata, config.explain)


class _Explanations:
    """Writes --explain's overlays: `<folder>/<the file's path below the inputs' common folder>.png`."""

    def __init__(self, explainer, paths, metadata, folder):
        self.explainer, self.folder, self.metadata = explainer, folder, metadata
        self.root = os.path.commonpath([os.path.dirname(os.path.abspath(path)) for path in paths]) if paths else ""

    def write(self, paths, images, classes, confidences):
        from imgclf import diagnosis, gradcam

        heatmaps = self.explainer.heatmaps(images, classes)
        grayscale = self.metadata.get("color_mode") == "grayscale"
        # The labeled batch is the picture shown when it has the display size; else the file is decoded again.
        same = images.shape[1] == diagnosis.DISPLAY_SIZE and self.metadata.get("resize", "bilinear") == "bilinear"
        for n, (path, heatmap, index, confidence) in enumerate(zip(paths, heatmaps, classes, confidences)):
            shown = images[n] if same else image_io.load_image(path, diagnosis.DISPLAY_SIZE, grayscale=grayscale)
            caption = f"{self.metadata['class_names'][index]} {confidence:.1%}"
            target = os.path.join(self.folder, os.path.relpath(os.path.abspath(path), self.root) + ".png")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with artifacts.atomic_path(target) as temporary:
                gradcam.save_overlay(gradcam.overlay(shown, heatmap), caption, temporary)


def _label(run, paths, metadata, config, done, explanations=None):
    """Labels `paths` batch by batch, appending rows to config.output and each label to `done`
    (and with `explanations`, writing each labeled image's Grad-CAM); returns how many files could not be read."""
    class_names = metadata["class_names"]
    threshold = loading.threshold(config, metadata)
    # On a terminal a progress bar stands in for the per-file lines; elsewhere (logs, pipes) one line per file.
    progress = Progress(len(paths), "files")
    errors, start = 0, 0
    batches = decoding.batches(
        paths,
        metadata["image_size"],
        config.batch_size,
        metadata.get("resize", "bilinear"),
        grayscale=metadata.get("color_mode") == "grayscale",
    )
    with open(config.output, "a", encoding="utf-8", newline="") as handle:
        try:
            for batch in batches:
                images, reasons = batch.images, batch.errors
                batch_paths = paths[start : start + len(reasons)]
                start += len(reasons)
                probabilities = outputs.class_probabilities(run(images))
                chosen, confidence = outputs.label_rows(probabilities, threshold)
                rows = []
                for path, reason, index, score, probs in zip(batch_paths, reasons, chosen, confidence, probabilities):
                    if reason:
                        rows.append([path, "", "", *([""] * len(class_names)), reason])
                        errors += 1
                        if not progress.live:
                            print(f"{path}\tERROR\t{reason}")
                        continue
                    rows.append([path, class_names[index], f"{score:.4f}", *(f"{p:.4f}" for p in probs), ""])
                    done[path] = int(index)
                    if not progress.live:
                        print(f"{path}\t{class_names[index]}\t{score:.4f}")
                _append(handle, rows, config.output)
                if explanations:
                    readable = [i for i, reason in enumerate(reasons) if not reason]
                    explanations.write(
                        [batch_paths[i] for i in readable], images[readable], chosen[readable],
                        confidence[readable],
                    )  # fmt: skip
                progress.advance(len(batch_paths))
        except KeyboardInterrupt:
            raise KeyboardInterrupt(
                f"{len(done)} labeled row(s) are in {config.output}; run the same command with --resume to label "
                "the rest."
            ) from None
        finally:
            progress.close()
    return errors


def _header(class_names):
    return ["path", "label", "confidence", *(f"prob_{name}" for name in class_names), "error"]


def _csv_text(rows):
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([[safe_cell(cell) for cell in row] for row in rows])
    return buffer.getvalue()


def _append(handle, rows, output):
    """Appends `rows` to the open CSV in one write, flushed, so that a crash never leaves half a row."""
    try:
        handle.write(_csv_text(rows))
        handle.flush()
    except OSError as error:
        raise UsageError(
            f"--output {output}: could not write ({error.strerror or error}). The rows written so far are kept: "
            "make room, then run the same command with --resume."
        ) from None


def _unescaped(cell):
    return cell[1:] if cell[:1] == "'" and cell[1:2] in ("=", "+", "-", "@", "\t", "\r") else cell


def _start_csv(output, class_names, paths, resume):
    """Starts the CSV: a fresh one with its header, or with --resume the rows already labeled.

    Returns {path: class index} of the files labeled in the earlier run. Their rows
    are kept; rows of files that could not be read, of files no longer among the
    inputs, and a last row cut short by a crash are dropped (and labeled again).
    """
    header = _header(class_names)
    kept, done = [], {}
    if resume and os.path.exists(output):
        with open(output, encoding="utf-8", newline="") as handle:
            text = handle.read()
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]  # A row cut short by a crash is labeled again.
        rows = list(csv.reader(io.StringIO(text)))
        if not rows or rows[0] != header:
            raise UsageError(
                f"--resume: {output} was not written by this model (its columns differ). "
                "Pass another --output, or leave --resume out to start again."
            )
        wanted = set(paths)
        index = {name: i for i, name in enumerate(class_names)}
        for row in rows[1:]:
            path = _unescaped(row[0]) if row else ""
            if len(row) == len(header) and path in wanted and path not in done and row[1] in index and not row[-1]:
                kept.append([path, *row[1:]])
                done[path] = index[row[1]]
    elif resume:
        print(f"--resume: {output} does not exist yet; labeling every file.")
    artifacts.write_text(output, predictions_csv(kept, class_names))
    return done


def _sort_copies(paths, chosen_labels, class_names, destination):
    """Copies each labeled file into `destination/<label>/`; a file already there with the same content (an
    earlier run's copy) is not copied again, and two different files of one name are kept as name, name_1..."""
    for name in class_names:
        os.makedirs(os.path.join(destination, name), exist_ok=True)
    copied = already = 0
    for path, label in zip(paths, chosen_labels):
        if label < 0:
            continue
        target = os.path.join(destination, class_names[label], os.path.basename(path))
        stem, suffix = os.path.splitext(target)
        counter = 1
        while os.path.exists(target) and not filecmp.cmp(path, target, shallow=False):
            target = f"{stem}_{counter}{suffix}"
            counter += 1
        if os.path.exists(target):
            already += 1
            continue
        shutil.copy2(path, target)
        copied += 1
    there = f"; {already} were there already (same content), not copied again" if already else ""
    print(f"Copied {copied} image(s) into {os.path.join(destination, '<label>', '')}{there}.")


def _evaluation_report(paths, true_labels, chosen_labels, metadata, config, threshold, model):
    """Writes <output>_report.txt (accuracy, balanced accuracy, ROC AUC, average precision, per class),
    the confusion matrix, the ROC and precision-recall curves and <output>_report.html (with the top
    losses and their Grad-CAM when `model` is a Keras model), from the probabilities in the CSV."""
    cli.quiet_tensorflow()
    from imgclf import diagnosis

    class_names, output = metadata["class_names"], config.output
    readable = chosen_labels >= 0
    probabilities_of = _probabilities_in(output)
    probabilities = np.array([probabilities_of[path] for path, ok in zip(paths, readable) if ok]).reshape(
        -1, len(class_names)
    )
    true_labels, chosen_labels = true_labels[readable], chosen_labels[readable]
    counts = report.confusion_matrix(true_labels, chosen_labels, len(class_names))
    scores = metrics.summary(true_labels, probabilities, counts)
    threshold_line = f"threshold: {threshold:.4f}" if len(class_names) == 2 else None
    text = report.text_report(counts, class_names, scores, threshold_line)
    stem = os.path.splitext(output)[0]
    artifacts.write_text(stem + "_report.txt", text)
    with artifacts.atomic_path(stem + "_confusion_matrix.png") as temporary:
        report.plot_confusion_matrix(counts, class_names, temporary)
    with (
        artifacts.atomic_path(stem + "_roc_curve.png") as roc,
        artifacts.atomic_path(stem + "_pr_curve.png") as pr,
    ):
        report.plot_curves(true_labels, probabilities, class_names, threshold, roc, pr)
    figures = {
        "source": config.input[0],
        "images": int(counts.sum()),
        "accuracy": float(np.trace(counts) / counts.sum()),
    }
    diagnosis.write_evaluation_report(
        [path for path, ok in zip(paths, readable) if ok], true_labels, probabilities, {**figures, **scores}, counts,
        metadata, threshold if len(class_names) == 2 else None, model, stem, _errors_in(output),
    )  # fmt: skip
    written = ", ".join(f"{stem}_{name}" for name in ("report.html", "report.txt", "confusion_matrix.png",
                                                        "roc_curve.png", "pr_curve.png", "top_losses.csv"))  # fmt: skip
    print(f"\n{text}Report written to {written}.")


def _errors_in(output):
    """(path, reason) of the rows of a predictions CSV whose file could not be read."""
    with open(output, encoding="utf-8", newline="") as handle:
        return [(_unescaped(row[0]), row[-1]) for row in list(csv.reader(handle))[1:] if row and row[-1]]


def _probabilities_in(output):
    """{path: per-class probabilities} of the labeled rows of a predictions CSV (this run's and a resumed one's)."""
    with open(output, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        columns = [i for i, name in enumerate(header) if name.startswith("prob_")]
        return {_unescaped(row[0]): [float(row[i]) for i in columns] for row in reader if not row[-1]}
