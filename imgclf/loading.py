"""What predict.py labels with: the model file (a model folder's model.h5, a Keras 3 file, a Keras 2 file, or an
exported .onnx/.tflite), its metadata checked against it, and the runtime it runs on (`runtimes.choose`)."""

import os

from imgclf import artifacts, cli, export, outputs, runtimes
from imgclf.cli import UsageError


def load_for_prediction(config):
    """The model to label with and its metadata (class names, image size, resize, threshold).

    A model trained here comes with metadata.json, which is checked against it; a
    Keras 2 file is rebuilt by `legacy` and described by --classes, --resize, --rescale.
    """
    cli.quiet_tensorflow()
    from imgclf import legacy

    model_file = model_path(config)
    if os.path.isdir(model_file):
        raise UsageError(f"--model: {model_file} is a folder. Pass a model file (model.h5, model.onnx, model.tflite).")
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
        artifacts.stored_config(model_file)  # Anything but a model file is refused first, in one line.
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


def model_path(config):
    return config.model or os.path.join(config.model_dir, artifacts.MODEL_FILE)


def runner(config, write_exports=True):
    """(run, metadata, Keras model or None): what labels a batch, on the runtime `runtimes.choose` picks: an
    exported file (which has no Keras model to explain), the model folder's export for that runtime (written now
    when it is missing, unless not `write_exports`), or Keras."""
    model_file = model_path(config)
    if runtimes.is_exported(model_file):
        runtime = runtimes.of_file(model_file)
        if config.runtime not in ("auto", runtime.NAME):
            raise UsageError(f"--runtime {config.runtime}: {model_file} runs on {runtime.NAME}. Leave --runtime out.")
        metadata = load_exported_metadata(config, model_file)
        run = runtimes.exported_runner(model_file)
        check_input_shape(run, model_file, metadata)
        print(f"Runtime: {runtime.NAME} (--model {model_file}).")
        return run, metadata, None
    runtime, why = runtimes.choose(config.runtime, _keras_needed(config, model_file))
    if runtime is not runtimes.keras_model:
        metadata = artifacts.read_metadata(model_file)
        artifacts.check_checksum(model_file, metadata)
        path, why_not = export.for_runtime(model_file, metadata, runtime, write_exports)
        if path:
            run = runtimes.exported_runner(path)
            check_input_shape(run, path, metadata)
            print(f"Runtime: {runtime.NAME} ({why}): {path}.")
            return run, metadata, None
        why = f"{why_not}; --runtime keras says so at once"
    model, metadata, _ = load_for_prediction(config)  # TensorFlow loads there, quietly
    from imgclf import devices

    print(f"Runtime: keras ({why}).")
    return runtimes.keras_model.runner(devices.inference_model(model, config.mixed_precision)), metadata, model


def threshold(config, metadata):
    """--threshold, else the one saved with the model (chosen on its validation images), else 0.5."""
    if config.threshold is not None:
        return config.threshold
    saved = metadata.get("threshold")
    return outputs.DEFAULT_THRESHOLD if saved is None else saved


def _keras_needed(config, model_file):
    """Why this run labels with the Keras model itself, or None."""
    if config.explain:
        return "--explain draws its Grad-CAM from the Keras model"
    if config.mixed_precision == "on":
        return "--mixed-precision on computes in Keras"
    if config.classes or config.weights or config.ignore_checksum or not artifacts.has_metadata(model_file):
        return "a model without metadata.json of its own (or --ignore-checksum) labels in Keras"
    if os.path.basename(model_file) != artifacts.MODEL_FILE:
        return f"{os.path.basename(model_file)} is not its folder's {artifacts.MODEL_FILE}, of which model.onnx is made"
    return None


def load_exported_metadata(config, model_file):
    """The metadata.json beside an exported file, checked against that file (SHA-256 as exported)."""
    if not os.path.isfile(model_file):
        raise UsageError(f"--model: {model_file} not found. Export one first: python predict.py --export onnx")
    if config.classes or config.weights:
        raise UsageError(f"--classes and --weights are for Keras model files, not {model_file}.")
    if not artifacts.has_metadata(model_file):
        raise UsageError(
            f"{model_file}: no metadata.json beside it. Keep each exported file with the metadata.json of its model."
        )
    metadata = artifacts.read_metadata(model_file)
    entry = export.exported_entry(metadata, model_file)
    if entry is None:
        raise UsageError(
            f"{model_file}: the metadata.json beside it lists no such export. Export it again with --export."
        )
    if not config.ignore_checksum and artifacts.sha256(model_file) != entry.get("sha256"):
        raise UsageError(
            f"{model_file}: modified since it was exported (its SHA-256 differs from metadata.json). "
            "Export it again, or pass --ignore-checksum if you changed it on purpose."
        )
    return metadata


def check_input_shape(run, model_file, metadata):
    size = metadata["image_size"]
    if [int(side) if str(side).lstrip("-").isdigit() else side for side in run.input_shape[1:]] != [size, size, 3]:
        raise UsageError(
            f"{model_file}: takes {run.input_shape[1:]} inputs, but metadata.json says {size}x{size} RGB images. "
            "Keep each exported file with the metadata.json of its model."
        )
