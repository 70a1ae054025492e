"""Labelling files with a trained model: CSV, evaluation against class folders, sorting copies."""

import csv
import io
import os
import shutil
import time

import numpy as np

from imgclf import artifacts, data, devices, folders, legacy, outputs, report
from imgclf.cli import UsageError


def load_for_prediction(config):
    """The model to label with and its metadata (class names, image size, resize, threshold).

    A model trained here comes with metadata.json, which is checked against it; a
    Keras 2 file is rebuilt by `legacy` and described by --classes, --resize, --rescale.
    """
    model_file = config.model or os.path.join(config.model_dir, artifacts.MODEL_FILE)
    if not os.path.isfile(model_file):
        flag = "--model" if config.model else "--model-dir"
        raise UsageError(f"{flag}: {model_file} not found. Train a model first: python train_cnn.py")
    if legacy.is_legacy_file(model_file):
        model = legacy.load(model_file, config.weights or None, config.rescale)
        classes = [name.strip() for name in config.classes.split(",")] if config.classes else None
        return model, artifacts.metadata_for(model, classes, model_file, config.resize or "nearest"), model_file
    if config.weights:
        raise UsageError(f"--weights is only for Keras 2 architecture files (.json); {model_file} holds its weights.")
    if not artifacts.has_metadata(model_file):
        # A Keras 3 model file on its own: --classes says what its outputs are, the file says the rest.
        if not config.classes:
            raise UsageError(
                f"{model_file}: no metadata.json beside it to name the classes. Pass --classes A,B,... "
                "(in the model's output order), or put the metadata.json written with it beside it."
            )
        model = artifacts.load_model(model_file, unsafe=config.unsafe_load)
        classes = [name.strip() for name in config.classes.split(",")]
        metadata = artifacts.metadata_for(model, classes, model_file, config.resize or "bilinear", "Keras 3")
        return model, metadata, model_file
    if config.classes:
        raise UsageError(f"--classes: {model_file} has a metadata.json naming its classes. Leave --classes out.")
    metadata = artifacts.read_metadata(model_file)
    if not config.ignore_checksum:
        artifacts.check_checksum(model_file, metadata)
    model = artifacts.load_model(model_file, unsafe=config.unsafe_load)
    artifacts.check_matches_metadata(model, model_file, metadata)
    return model, metadata, model_file


def convert(model, metadata, model_file, folder):
    """Writes `model` in today's format (model.h5, model.weights.h5, metadata.json) into `folder`."""
    folders.check_writable_folder(folder, "--convert")
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
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "confidence", *(f"prob_{name}" for name in class_names), "error"])
    for row in rows:
        writer.writerow([safe_cell(cell) for cell in row])
    return buffer.getvalue()


def predict(config):
    """Labels every input file; returns exit status 0 (all labeled) or 1 (some unreadable)."""
    started = time.time()
    model, metadata, model_file = load_for_prediction(config)
    if config.convert:
        return convert(model, metadata, model_file, config.convert)
    model = devices.inference_model(model, config.mixed_precision)
    load_seconds = time.time() - started
    class_names = metadata["class_names"]
    threshold = metadata.get("threshold", outputs.DEFAULT_THRESHOLD) if config.threshold is None else config.threshold
    true_labels = None
    if config.evaluate:
        if len(config.input) != 1 or not os.path.isdir(config.input[0]):
            raise UsageError("--evaluate needs one --input folder holding one sub-folder per class.")
        paths, true_labels, _ = folders.scan_class_folders(config.input[0], classes=class_names, subset=True)
    else:
        paths = folders.list_inputs(config.input)
    output_dir = os.path.dirname(os.path.abspath(config.output))
    folders.check_writable_folder(output_dir, "--output")
    if config.sort_into:
        folders.check_writable_folder(config.sort_into, "--sort-into")

    rows, chosen_labels, errors = [], [], []
    start = 0
    for images, batch_errors in data.decode_dataset(
        paths, metadata["image_size"], config.batch_size, metadata.get("resize", "bilinear")
    ):
        batch_paths = paths[start : start + len(batch_errors)]
        start += len(batch_errors)
        reasons = [error.decode() for error in batch_errors.numpy()]
        scores = np.asarray(model.predict_on_batch(images))
        chosen, confidence = outputs.label_rows(scores, threshold)
        probabilities = outputs.class_probabilities(scores)
        for path, reason, index, score, probs in zip(batch_paths, reasons, chosen, confidence, probabilities):
            if reason:
                rows.append([path, "", "", *([""] * len(class_names)), reason])
                chosen_labels.append(-1)
                errors.append(path)
                print(f"{path}\tERROR\t{reason}")
                continue
            rows.append([path, class_names[index], f"{score:.4f}", *(f"{p:.4f}" for p in probs), ""])
            chosen_labels.append(int(index))
            print(f"{path}\t{class_names[index]}\t{score:.4f}")

    seconds = time.time() - started - load_seconds
    artifacts.write_text(config.output, predictions_csv(rows, class_names))
    labeled = len(paths) - len(errors)
    print(
        f"Labeled {labeled} of {len(paths)} files in {seconds:.1f} s ({len(paths) / seconds:.0f} images/s; "
        f"model loaded in {load_seconds:.1f} s); predictions written to {config.output}."
    )
    if errors:
        print(f"{len(errors)} file(s) could not be read; their reasons are in the 'error' column.")
    if config.sort_into:
        _sort_copies(paths, chosen_labels, class_names, config.sort_into)
    if true_labels is not None:
        _evaluate(np.array(true_labels), np.array(chosen_labels), class_names, config.output)
    return 1 if errors else 0


def _sort_copies(paths, chosen_labels, class_names, destination):
    for name in class_names:
        os.makedirs(os.path.join(destination, name), exist_ok=True)
    copied = 0
    for path, label in zip(paths, chosen_labels):
        if label < 0:
            continue
        target = os.path.join(destination, class_names[label], os.path.basename(path))
        stem, suffix = os.path.splitext(target)
        counter = 1
        while os.path.exists(target):  # Two inputs with the same name must not overwrite each other.
            target = f"{stem}_{counter}{suffix}"
            counter += 1
        shutil.copy2(path, target)
        copied += 1
    print(f"Copied {copied} image(s) into {destination}/<label>/.")


def _evaluate(true_labels, chosen_labels, class_names, output):
    readable = chosen_labels >= 0
    counts = report.confusion_matrix(true_labels[readable], chosen_labels[readable], len(class_names))
    text = report.text_report(counts, class_names)
    stem = os.path.splitext(output)[0]
    artifacts.write_text(stem + "_report.txt", text)
    with artifacts.atomic_path(stem + "_confusion_matrix.png") as temporary:
        report.plot_confusion_matrix(counts, class_names, temporary)
    print(f"\n{text}Report written to {stem}_report.txt and {stem}_confusion_matrix.png.")
