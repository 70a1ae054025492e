"""The Python API: what the two scripts do, from a notebook or a program.

    import imgclf

    classifier = imgclf.train("Dataset", model_dir="models", time_budget=5)  # train_cnn.py's flags, as keywords
    classifier = imgclf.load("models")        # a model folder, or a file: model.h5, model.onnx, model.tflite
    row = classifier.predict("Dataset/Predict/cat.jpg")   # also a PIL image, an array, or a list of them
    row["label"], row["confidence"], row["prob_Cats"]      # the fields of a predictions.csv row
    figures = classifier.evaluate("Dataset/Test_Set")      # accuracy, balanced accuracy, ... of a labeled folder
    classifier.explain("Dataset/Predict/cat.jpg").save("why.png")   # Grad-CAM: where the network looked

A mistake the scripts answer with one line and exit status 2 raises `imgclf.UsageError` with that line.
"""

import dataclasses
import difflib
import io
import os

import numpy as np
from PIL import Image

from imgclf import artifacts, cli, decoding, folders, loading, metrics, outputs, report, runtimes
from imgclf import images as image_io
from imgclf.cli import UsageError

BATCH_SIZE = 32
# predict.py's flags that say how to load and read a model (the others say what to label, and where to write)
LOAD_FLAGS = (
    "threshold", "classes", "weights", "resize", "rescale", "ignore_checksum", "unsafe_load", "mixed_precision"
)  # fmt: skip


def make_config(config_class, **values):
    """`config_class` (TrainConfig, PredictConfig) from keywords named as the flags are (`time_budget` for
    --time-budget), checked as the flags are; a path may be a pathlib.Path."""
    known = {field.name for field in dataclasses.fields(config_class)}
    for name in sorted(set(values) - known):
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"Did you mean {close[0]}?" if close else f"Settings are the flags' names with _ for -: {sorted(known)}."
        raise UsageError(f"{name}: not a setting. {hint}")
    return config_class(**{name: os.fspath(value) if isinstance(value, os.PathLike) else value
                           for name, value in values.items()})  # fmt: skip


def train(data_dir="Dataset", **flags):
    """Trains on `data_dir` as `python train_cnn.py --data-dir DATA_DIR` does, with `flags` for the other flags
    (`model_dir="models"`, `time_budget=10`, `recipe="auto"`, ...); returns the trained `Classifier`."""
    config = make_config(cli.settings().TrainConfig, data_dir=data_dir, **flags)
    cli.quiet_tensorflow()
    from imgclf import training

    training.train(config)
    return load(config.model_dir)


def load(path="models", runtime="auto", **flags):
    """The model in `path` (a folder written by training, or a model file) on `runtime` (auto: the fastest here, as
    predict.py chooses), ready to label; `flags`: predict.py's flags about the model (LOAD_FLAGS)."""
    for name in set(flags) - set(LOAD_FLAGS):
        raise UsageError(f"{name}: not a setting of a loaded model; those are {', '.join(LOAD_FLAGS)}.")
    path = os.fspath(path)
    where = {"model_dir": path} if os.path.isdir(path) else {"model": path}
    return Classifier(make_config(cli.settings().PredictConfig, runtime=runtime, **where, **flags))


class Classifier:
    """A trained model, loaded once: labels paths, PIL images and arrays; evaluates a labeled folder; explains."""

    def __init__(self, config, write_exports=True):
        self.config = config
        self.run, self.metadata, self._model = loading.runner(config, write_exports)
        self.class_names = list(self.metadata["class_names"])
        self.threshold = loading.threshold(config, self.metadata)
        self._gradcam = None  # made on the first explain

    def __repr__(self):
        return f"Classifier({loading.model_path(self.config)!r}, classes={self.class_names})"

    def pixels(self, item):
        """`item` (a path, a file's bytes, a PIL image, or an array of 0-255 pixels: height x width, with 1, 3 or 4
        channels) as the
        model takes it: (size, size, 3) uint8, made as training made its images. Raises ImageError."""
        size, resize = self.metadata["image_size"], self.metadata.get("resize", "bilinear")
        grayscale = self.metadata.get("color_mode") == "grayscale"
        if isinstance(item, Image.Image):
            return image_io.prepare(item, size, resize, grayscale)
        if isinstance(item, np.ndarray):
            return image_io.prepare(_from_array(item), size, resize, grayscale)
        source = io.BytesIO(item) if isinstance(item, bytes) else os.fspath(item)
        return image_io.load_image(source, size, resize, grayscale)

    def predict(self, items, batch_size=BATCH_SIZE):
        """The label of `items` (one, or a list): for each a dict of a predictions.csv row's fields (path, label,
        confidence, prob_<class> for each class, error; a file that cannot be read has its reason in error)."""
        single = not isinstance(items, list | tuple)
        items = [items] if single else list(items)
        rows, start = [], 0
        for pixels, errors in self._batches(items, batch_size):
            rows += self._rows(items[start : start + len(errors)], pixels, errors)
            start += len(errors)
        return rows[0] if single else rows

    def _batches(self, items, batch_size):
        """(pixels, errors) of each `batch_size` of `items`: files decoded ahead on every core as predict.py decodes
        them (`decoding.batches`), other pictures one by one."""
        size, resize = self.metadata["image_size"], self.metadata.get("resize", "bilinear")
        if all(isinstance(item, str | os.PathLike) for item in items):
            grayscale = self.metadata.get("color_mode") == "grayscale"
            paths = [os.fspath(item) for item in items]
            for batch in decoding.batches(paths, size, batch_size, resize, grayscale):
                yield batch.images, batch.errors
            return
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            pixels, errors = np.zeros((len(chunk), size, size, 3), np.uint8), [""] * len(chunk)
            for i, item in enumerate(chunk):
                try:
                    pixels[i] = self.pixels(item)
                except image_io.ImageError as error:
                    errors[i] = str(error)
            yield pixels, errors

    def _rows(self, items, pixels, errors):
        probabilities = self.probabilities(pixels)
        chosen, confidence = outputs.label_rows(probabilities, self.threshold)
        rows = []
        for item, error, index, score, probs in zip(items, errors, chosen, confidence, probabilities):
            row = {"path": _name(item), "label": "", "confidence": None}
            row.update({f"prob_{name}": None for name in self.class_names})
            if not error:
                row.update(label=self.class_names[index], confidence=float(score))
                row.update({f"prob_{name}": float(p) for name, p in zip(self.class_names, probs)})
            rows.append({**row, "error": error})
        return rows

    def probabilities(self, pixels):
        """Per-class probabilities of a batch of `pixels` (n, size, size, 3)."""
        return outputs.class_probabilities(self.run(np.asarray(pixels, np.float32)))

    def evaluate(self, folder):
        """Labels `folder` (one sub-folder per class, named as the model's classes) and returns its figures: images,
        accuracy, balanced_accuracy, roc_auc, average_precision, confusion_matrix (rows: true class), unreadable."""
        paths, truth, _ = folders.scan_class_folders(os.fspath(folder), classes=self.class_names, subset=True)
        rows = self.predict(paths)
        readable = [i for i, row in enumerate(rows) if not row["error"]]
        truth = np.asarray(truth)[readable]
        probabilities = np.array([[rows[i][f"prob_{name}"] for name in self.class_names] for i in readable])
        chosen = np.array([self.class_names.index(rows[i]["label"]) for i in readable], np.int64)
        counts = report.confusion_matrix(truth, chosen, len(self.class_names))
        return {
            "images": int(counts.sum()),
            "accuracy": float(np.trace(counts) / max(1, counts.sum())),
            **metrics.summary(truth, probabilities.reshape(-1, len(self.class_names)), counts),
            "confusion_matrix": counts.tolist(),
            "class_names": self.class_names,
            "unreadable": {rows[i]["path"]: rows[i]["error"] for i in range(len(rows)) if rows[i]["error"]},
        }

    def explain(self, item, label=None):
        """A PIL image of `item` at the model's input size with its Grad-CAM laid over it (red: where the network
        looked for `label`, by default the label it gives). Needs the Keras model (TensorFlow loads on first use)."""
        if label is not None and label not in self.class_names:
            raise UsageError(f"explain: label {label!r} is not one of the model's classes {self.class_names}.")
        cli.quiet_tensorflow()
        from imgclf import gradcam

        pixels = self.pixels(item)
        if label is None:
            index = int(outputs.label_rows(self.probabilities(pixels[None]), self.threshold)[0][0])
        else:
            index = self.class_names.index(label)
        if self._gradcam is None:
            self._gradcam = gradcam.GradCam(self.keras_model())
        heatmap = self._gradcam.heatmaps(pixels[None], [index])[0]
        return Image.fromarray(gradcam.overlay(pixels, heatmap))

    def keras_model(self):
        """The Keras model: the one labeling runs on, or the model.h5 of the folder of the export it runs on."""
        if self._model is None:
            model_file = loading.model_path(self.config)
            if runtimes.is_exported(model_file):
                model_file = os.path.join(os.path.dirname(os.path.abspath(model_file)), artifacts.MODEL_FILE)
            if not os.path.isfile(model_file):
                raise UsageError(f"explain needs the Keras model, {model_file}: not found beside the export.")
            config = dataclasses.replace(self.config, model=model_file, runtime="keras")
            self._model = loading.load_for_prediction(config)[0]
        return self._model


def _from_array(array):
    """An array of 0-255 pixels (height x width, grey or with 3 or 4 channels) as a PIL image."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise image_io.ImageError(
            f"an array of shape {array.shape}: expected height x width, with 1, 3 or 4 channels, of 0-255 pixels"
        )
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _name(item):
    """The path field of a row: the file's path, or a PIL image's file name ('' for pictures made in memory)."""
    if isinstance(item, Image.Image):
        return getattr(item, "filename", "") or ""
    if isinstance(item, np.ndarray | bytes):
        return ""
    return os.fspath(item)
