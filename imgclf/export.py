"""Writing a trained model for other runtimes: ONNX, LiteRT (float32 or int8) and TensorFlow SavedModel.

Every format holds the inference network only, in float32: the input is the
resized RGB image (NHWC, float32 values 0-255, at the model's image size), the
normalization is inside, and the output is one probability per class in
`class_names` order. Augmentation never is (it lives in the tf.data pipeline, not
in the model). Keras's own `model.export` does the work; the LiteRT files are
restricted to the builtin operators, so the plain LiteRT runtime (`ai-edge-litert`)
runs them without the full-TensorFlow (Flex) delegate.
"""

import contextlib
import gc
import hashlib
import json
import os
import shutil

import numpy as np

from imgclf import artifacts, cli, decoding, folders, runtimes
from imgclf.cli import UsageError

# What each --export format writes into the model folder.
FILES = {
    "onnx": "model.onnx",
    "litert": "model.tflite",
    "litert-int8": "model_int8.tflite",
    "saved-model": "saved_model",
}
CALIBRATION_IMAGES = 300


def inference_network(model):
    """A float32 copy of `model` whose output is the probability of every class (a sigmoid p becomes 1-p, p).

    Mixed-precision models are rebuilt from their config with every dtype policy
    set to float32 (ONNX and LiteRT need float32 throughout), nested backbones included.
    """
    import keras

    config = _float32_config(model.get_config())
    network = model.__class__.from_config(config)
    network.set_weights(model.get_weights())
    image = keras.Input(shape=model.input_shape[1:], dtype="float32", name="image")
    scores = network(image)
    if scores.shape[-1] == 1:
        scores = keras.layers.Concatenate(name="probabilities")([1.0 - scores, scores])
    inference = keras.Model(image, scores, name=f"{model.name}_inference")
    inference(np.zeros((1, *model.input_shape[1:]), np.float32))  # The ONNX exporter wants a model that has run.
    return inference


def _float32_config(config):
    if isinstance(config, dict):
        if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(config.get("config"), dict):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: _float32_config(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_config(value) for value in config]
    if isinstance(config, str) and config.startswith("mixed_"):
        return "float32"
    return config


def calibration_paths(metadata, folder, count=CALIBRATION_IMAGES):
    """Up to `count` images to calibrate int8 quantization on, spread evenly over the classes.

    From `folder` (--calibration) when given, else from the Training_Set that
    metadata.json says the model was trained on.
    """
    if folder:
        if not os.path.isdir(folder):
            raise UsageError(f"--calibration {folder}: not a folder. Pass a folder of a few hundred of your photos.")
        paths = folders.list_files(folder)
        if not paths:
            raise UsageError(f"--calibration {folder}: no files there. Pass a folder of a few hundred of your photos.")
        return paths[:: max(1, len(paths) // count)][:count]
    data_dir = metadata.get("config", {}).get("data_dir", "")
    training = folders.find_folder(data_dir, folders.TRAINING_NAMES) if data_dir and os.path.isdir(data_dir) else None
    if training is None:
        raise UsageError(
            f"--export litert-int8: the training images ({data_dir or '?'}/Training_Set, from metadata.json) are not "
            "here to calibrate on. Pass --calibration FOLDER with a few hundred photos like the ones you will label."
        )
    paths, labels, _ = folders.scan_class_folders(training, metadata["class_names"], subset=True)
    per_class = max(1, count // len(metadata["class_names"]))
    chosen = []
    for index in range(len(metadata["class_names"])):
        members = [path for path, label in zip(paths, labels) if label == index]
        chosen += members[:: max(1, len(members) // per_class)][:per_class]
    return chosen


def _calibration_batches(paths, image_size):
    decoded = decoding.decode_all(paths, image_size, cache_bytes=1 << 40, cache_file=None)
    images, errors = decoded.inputs, decoded.errors
    unreadable = {index for index, _ in errors}
    usable = [i for i in range(len(paths)) if i not in unreadable]
    if not usable:
        raise UsageError("--calibration: none of its files could be read as an image.")

    def batches():
        for i in usable:
            yield [images[i : i + 1].astype(np.float32)]

    return batches, len(usable)


@contextlib.contextmanager
def _collecting_often():
    """Python's cyclic garbage collected as it comes: the ONNX converter (tf2onnx) copies its whole graph before
    each of its optimizer passes and drops the copies in reference cycles, 0.8 GB for Lite0 before the collector's
    rare full passes reach them. The heap as it stood is set aside (`gc.freeze`), so frequent full passes only
    look at what the converter made: measured on Lite0, a peak of +0.3 GB instead of +1.1 GB, as fast."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(thresholds[0], 2, 2)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def write(network, fmt, path, calibration=None):
    """Writes the float32 `network` (see `inference_network`) to `path` in format `fmt` (a key of FILES).

    What the converters leave behind (freed heap that the C library keeps) is handed back to
    the system afterwards, as training goes on in the same process.
    """
    import tensorflow as tf

    try:
        if fmt == "onnx":
            with _collecting_often():
                network.export(path, format="onnx", verbose=False)
        elif fmt == "saved-model":
            network.export(path, format="tf_saved_model", verbose=False)
        else:
            # Builtin operators only: a Flex op would need the full TensorFlow runtime on the phone.
            options = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
            if fmt == "litert-int8":
                options.update(optimizations=[tf.lite.Optimize.DEFAULT], representative_dataset=calibration)
            network.export(path, format="litert", verbose=False, **options)
    finally:
        runtimes.release_memory()


def _digest(path):
    if os.path.isfile(path):
        return artifacts.sha256(path)
    # A SavedModel folder: the digest of its files' names and digests, in order.
    lines = []
    for folder, _, names in sorted(os.walk(path)):
        for name in sorted(names):
            full = os.path.join(folder, name)
            lines.append(f"{os.path.relpath(full, path)} {artifacts.sha256(full)}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def contract(metadata, input_name, output_name):
    """The input and output an exported file has, as metadata.json states it."""
    size = metadata["image_size"]
    return {
        "input": {
            "name": input_name,
            "dtype": "float32",
            "shape": ["batch", size, size, 3],
            "layout": "NHWC",
            "values": "RGB pixel values 0-255 (not scaled), the photo turned upright from its EXIF orientation "
            f"and resized ({metadata.get('resize', 'bilinear')}) to {size}x{size}"
            + (
                ", colour reduced to grey (the grey in R, G and B)" if metadata.get("color_mode") == "grayscale" else ""
            ),
        },
        "output": {
            "name": output_name,
            "dtype": "float32",
            "shape": ["batch", len(metadata["class_names"])],
            "values": "probability of each class, in class_names order",
        },
    }


def _io_names(fmt, path):
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return session.get_inputs()[0].name, session.get_outputs()[0].name
    if fmt.startswith("litert"):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=path)  # also proves the plain runtime loads it
        return interpreter.get_input_details()[0]["name"], interpreter.get_output_details()[0]["name"]
    return "image", "output_0"


def export(model, metadata, model_file, fmt, calibration_folder="", converted=None):
    """Writes `model` in format `fmt` beside `model_file` and records it in metadata.json; returns 0.
    `converted`: a file `model` was already written to in `fmt` (by `write`), copied instead of converting again."""
    folder = os.path.dirname(os.path.abspath(model_file))
    folders.check_writable_folder(folder, "--export")
    target = os.path.join(folder, FILES[fmt])
    calibration, calibrated = None, 0
    if fmt == "litert-int8":
        paths = calibration_paths(metadata, calibration_folder)
        calibration, calibrated = _calibration_batches(paths, metadata["image_size"])
    temporary = os.path.join(folder, f".tmp-{os.getpid()}-{FILES[fmt]}")
    try:
        try:
            if converted:
                shutil.copyfile(converted, temporary)
            else:
                with cli.native_stderr_silenced():  # The converters log their passes to stderr.
                    write(inference_network(model), fmt, temporary, calibration)
        except Exception as error:  # The converters raise many types; each means this model cannot go there.
            raise UsageError(f"--export {fmt}: the converter failed ({cli.reason(error)}).") from None
        input_name, output_name = _io_names(fmt, temporary)
        _replace(temporary, target)
    finally:
        _remove(temporary)
    entry = {"file": FILES[fmt], "sha256": _digest(target), **contract(metadata, input_name, output_name)}
    if calibrated:
        entry["calibration_images"] = calibrated
    _record(model_file, fmt, entry)
    print(f"Exported {fmt} to {target} ({_size_mb(target):.1f} MB); metadata.json lists it with its input contract.")
    return 0


def _replace(temporary, target):
    if os.path.isdir(temporary):  # A folder cannot be renamed over another: move the old one aside first.
        old = target + ".old"
        _remove(old)
        if os.path.exists(target):
            os.replace(target, old)
        os.replace(temporary, target)
        _remove(old)
    else:
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def _size_mb(path):
    if os.path.isfile(path):
        return os.path.getsize(path) / 1e6
    return sum(os.path.getsize(os.path.join(f, n)) for f, _, names in os.walk(path) for n in names) / 1e6


def _record(model_file, fmt, entry):
    metadata = artifacts.read_metadata(model_file)
    metadata.setdefault("exports", {})[fmt] = entry
    artifacts.write_text(os.path.join(os.path.dirname(os.path.abspath(model_file)), artifacts.METADATA_FILE),
                         json.dumps(metadata, indent=2) + "\n")  # fmt: skip


def exported_entry(metadata, path):
    """The metadata.json entry of the exported file at `path`, or None when metadata.json does not list it."""
    name = os.path.basename(path)
    return next((entry for entry in metadata.get("exports", {}).values() if entry.get("file") == name), None)


def for_runtime(model_file, metadata, runtime, write=True):
    """(path, None): the model folder's export for `runtime` (a `runtimes` module), as metadata.json lists it; or
    written now, once, when it is missing (a model trained before training wrote it) or changed, unless not `write`;
    or (None, why not).
    """
    folder = os.path.dirname(os.path.abspath(model_file))
    path = os.path.join(folder, runtime.FILE)
    entry = metadata.get("exports", {}).get(runtime.EXPORT_FORMAT)
    if entry and os.path.isfile(path) and artifacts.sha256(path) == entry.get("sha256"):
        return path, None
    state = "changed since it was written" if entry and os.path.exists(path) else "not written yet"
    if not write:
        return None, f"{path} is {state} (python predict.py writes it once)"
    if not os.access(folder, os.W_OK):
        return None, f"{path} is {state}, and {folder} is not writable"
    print(f"{path}: {state}; writing it from {os.path.basename(model_file)}, once...", flush=True)
    try:
        with artifacts.one_writer(folder, "--model-dir"):
            cli.quiet_tensorflow()
            model = artifacts.load_model(model_file)
            artifacts.check_matches_metadata(model, model_file, metadata)
            export(model, metadata, model_file, runtime.EXPORT_FORMAT)
    except UsageError as error:
        return None, f"{path} could not be written ({error})"
    return path, None
