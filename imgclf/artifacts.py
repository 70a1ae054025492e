"""Saving and loading what training produces, without ever leaving a broken file.

Every file is written under a temporary name in its destination folder, flushed
to disk, and then renamed over the old one, so an interrupted run leaves the
previous file intact.
"""

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import zipfile

from imgclf import outputs
from imgclf.cli import UsageError

MODEL_FILE = "model.h5"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
MODEL_FILES_ARE = (
    "Models are the model.h5 (or .keras) that train_cnn.py writes, a Keras 2 .h5 or .json (with --weights), "
    "or an exported model.onnx or .tflite."
)
# A training run writes its model and reports here first; they reach the model folder together (`commit`).
STAGING = os.path.join("checkpoints", "staged")
LOCK_FILE = ".writer.lock"  # held by the one process writing a model folder (`one_writer`)
DONE = " (done)"


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path` (same suffix); on success it replaces `path`.

    The temporary keeps the destination's full name at its end, so libraries
    that check the suffix (`.weights.h5`, `.png`) accept it. On any error it is
    removed and `path` is left as it was.
    """
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".tmp-{os.getpid()}-{name}")
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_folder(folder)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text(path, text):
    """Writes `text` to `path` atomically."""
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def _fsync_folder(folder):
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def staged(model_dir, name=""):
    """Where a training run writes `name` (a report, the model) before it is committed to `model_dir`."""
    return os.path.join(model_dir, STAGING, name)


@contextlib.contextmanager
def interrupts_deferred(message):
    """Holds Ctrl-C (SIGINT) back meanwhile, so a few renames happen all or none; one that came meanwhile is
    raised afterwards as KeyboardInterrupt(`message`), saying what was done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *args: received.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and previous is signal.default_int_handler:
        raise KeyboardInterrupt(message)
    if received and callable(previous):
        previous(*received[0])
    elif received and previous == signal.SIG_DFL:
        signal.raise_signal(signal.SIGINT)


def commit(staging, model_dir, names):
    """Moves everything in `staging` into `model_dir` and removes the `names` (reports and exports an earlier
    model had) that this run did not write, so the folder describes one model only.

    Ctrl-C is held back meanwhile. The earlier metadata.json goes first and the new one (with the model files'
    SHA-256) comes last, so even a kill in between leaves a folder that predict.py refuses, never a mix it uses.
    """
    order = [MODEL_FILE, WEIGHTS_FILE, METADATA_FILE]
    written = [name for name in os.listdir(staging) if not name.startswith(".tmp-")]  # not a killed write's leftover
    written.sort(key=lambda name: (order.index(name) if name in order else -1, name))
    with interrupts_deferred(f"the new model and its reports were saved in {model_dir} all the same."):
        for name in [METADATA_FILE, *names]:
            stale = os.path.join(model_dir, name)
            if os.path.isdir(stale) and not os.path.islink(stale):
                shutil.rmtree(stale)
            elif os.path.lexists(stale):
                os.remove(stale)
        for name in written:
            os.replace(os.path.join(staging, name), os.path.join(model_dir, name))
        _fsync_folder(model_dir)


@contextlib.contextmanager
def one_writer(folder, flag):
    """Holds `folder`'s writer lock meanwhile, so that two runs never write one model folder at once.

    The lock is the operating system's (flock) on a small file that names its holder: a second
    writer stops with one line naming the first; a process that was killed holds nothing any
    more, and the next one takes over with a note.
    """
    import fcntl

    handle = open(os.path.join(folder, LOCK_FILE), "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"{flag} {folder}: {_holder(handle) or 'another process'} is writing there now. Wait for it to "
                f"finish, or pass another {flag}."
            ) from None
        earlier = _holder(handle)
        if earlier and not earlier.endswith(DONE):
            print(f"Note: {folder} was left by {earlier}, which was killed before it finished; taking it over.")
        holder = f"process {os.getpid()} ({os.path.basename(sys.argv[0])}, since {time.strftime('%Y-%m-%d %H:%M:%S')})"
        _name_holder(handle, holder)
        try:
            yield
        finally:  # Any end Python sees (done, an error, Ctrl-C); only a killed process leaves no mark.
            if not handle.closed and os.path.exists(handle.name):
                _name_holder(handle, holder + DONE)
    finally:
        handle.close()  # also releases the lock


def _holder(handle):
    handle.seek(0)
    return handle.read().strip()


def _name_holder(handle, text):
    handle.seek(0)
    handle.truncate()
    handle.write(text + "\n")
    handle.flush()


def sha256(path):
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def save_model(model, model_dir, metadata):
    """Writes model.h5, model.weights.h5 and metadata.json (with both files' SHA-256) into `model_dir`.

    All three are written to temporary files first and renamed into place only
    once every one of them is complete, so a failure leaves the old set intact.
    """
    hashes = {}
    weights_only = model
    if getattr(model, "optimizer", None) is not None:  # model.weights.h5 holds the weights alone, no optimizer state.
        weights_only = model.__class__.from_config(model.get_config())  # clone_model would copy the optimizer too.
        weights_only.set_weights(model.get_weights())
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # Keras warns that HDF5 is "legacy"; model.h5 is what users expect.
    try:
        with contextlib.ExitStack() as stack:
            for name, save in (
                (MODEL_FILE, functools.partial(model.save, include_optimizer=False)),  # predict needs no optimizer
                (WEIGHTS_FILE, weights_only.save_weights),
            ):
                temporary = stack.enter_context(atomic_path(os.path.join(model_dir, name)))
                save(temporary)
                hashes[name] = sha256(temporary)
            temporary = stack.enter_context(atomic_path(os.path.join(model_dir, METADATA_FILE)))
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(json.dumps({**metadata, "sha256": hashes}, indent=2) + "\n")
    finally:
        absl_logger.setLevel(level)


def _metadata_path(model_file):
    return os.path.join(os.path.dirname(os.path.abspath(model_file)), METADATA_FILE)


def has_metadata(model_file):
    """True when a metadata.json sits beside `model_file`."""
    return os.path.exists(_metadata_path(model_file))


def read_metadata(model_file):
    """The metadata.json beside `model_file`, or UsageError saying it is missing or unreadable."""
    path = _metadata_path(model_file)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise UsageError(f"{path}: not found. Train with train_cnn.py, which writes it beside the model.") from None
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: unreadable ({error}). Retrain, or restore it from a backup.") from None


def stored_config(model_file):
    """The architecture a model file declares (its JSON config), read without building anything.

    Raises:
        UsageError: the file is neither a Keras HDF5 file nor a `.keras` archive, or has no config.
    """
    import h5py

    try:
        if h5py.is_hdf5(model_file):
            with h5py.File(model_file, "r") as handle:
                raw = handle.attrs.get("model_config")
        elif zipfile.is_zipfile(model_file):
            with zipfile.ZipFile(model_file) as archive:
                raw = archive.read("config.json")
        else:
            raw = None
        if raw is None:
            raise ValueError("no model architecture in it")
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise UsageError(f"{model_file}: not a valid model file ({error}). {MODEL_FILES_ARE}") from None


def code_references(config):
    """Names of the layers or objects in a model config that would run code from outside Keras.

    A Lambda layer carries Python code; any class whose module is not Keras's own
    would be imported from wherever the file says. Neither is allowed by default.
    """
    found = []
    if isinstance(config, dict):
        module = config.get("module")
        if config.get("class_name") == "Lambda":
            found.append(f"Lambda layer '{config.get('config', {}).get('name', '?')}'")
        elif isinstance(module, str) and module and module.split(".")[0] not in ("keras", "builtins"):
            found.append(f"{config.get('class_name')} from module '{module}'")
        elif str(config.get("registered_name", "")).startswith("Custom>"):
            found.append(f"custom object '{config['registered_name']}'")
        for value in config.values():
            found.extend(code_references(value))
    elif isinstance(config, list):
        for value in config:
            found.extend(code_references(value))
    return found


def check_checksum(model_file, metadata):
    """Refuses a model file whose SHA-256 differs from the one training wrote into metadata.json."""
    expected = metadata.get("sha256", {}).get(os.path.basename(model_file))
    if expected and sha256(model_file) != expected:
        raise UsageError(
            f"{model_file}: modified since training (its SHA-256 differs from metadata.json). "
            "Retrain, or pass --ignore-checksum if you changed it on purpose."
        )


def load_model(model_file, unsafe=False):
    """Loads a model file for prediction (no optimizer), refusing any code it would run.

    Args:
        model_file: a `.h5` or `.keras` file.
        unsafe: allow Lambda layers and classes from outside Keras (only for files you trust).
    """
    import keras

    if not os.path.isfile(model_file):
        raise UsageError(f"{model_file}: model file not found. Train one with train_cnn.py or pass --model.")
    if not unsafe:
        references = code_references(stored_config(model_file))
        if references:
            raise UsageError(
                f"{model_file}: refused: it contains code that would run when loaded ({', '.join(references[:3])}). "
                "Pass --unsafe-load only if you trust where this file came from."
            )
    try:
        return keras.models.load_model(model_file, compile=False, safe_mode=not unsafe)
    except Exception as error:  # Keras raises many types for a damaged file; all mean the same to the user.
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise UsageError(f"{model_file}: not a valid model file ({reason}). {MODEL_FILES_ARE}") from None


def check_matches_metadata(model, model_file, metadata):
    """Refuses a model whose input size or number of outputs disagrees with its metadata.json."""
    size = metadata.get("image_size")
    classes = len(metadata.get("class_names", []))
    input_shape = tuple(model.input_shape[1:3])
    units = model.output_shape[-1]
    if input_shape != (size, size) or not outputs.fits(units, classes):
        raise UsageError(
            f"{model_file}: takes {input_shape} images and gives {units} output(s), but metadata.json says "
            f"{size}x{size} and {classes} classes. Keep each model with the metadata.json written with it."
        )


def metadata_for(model, class_names, source, resize="nearest", origin="Keras 2"):
    """What metadata.json would say for a model file that came without one.

    Args:
        class_names: from --classes; default `class_0`, `class_1`, ...
        origin: "Keras 2" (rebuilt here, scaled by --rescale inside the model) or "Keras 3" (taken as it is).
    """
    height, width = model.input_shape[1:3]
    if height != width:
        raise UsageError(f"{source}: takes {height}x{width} images; only square inputs are supported.")
    units = model.output_shape[-1]
    classes = list(class_names) if class_names else [f"class_{i}" for i in range(max(2, units))]
    if not outputs.fits(units, len(classes)):
        given = f"{len(classes)} name was" if len(classes) == 1 else f"{len(classes)} names were"
        raise UsageError(
            f"--classes: the model has {max(2, units)} classes, {given} given. Name each class, in output order."
        )
    scaling = "pixel values scaled by --rescale inside the model" if origin == "Keras 2" else "0-255 pixel values"
    return {
        "class_names": classes,
        "image_size": int(height),
        "color_mode": "rgb",
        "resize": resize,
        "preprocessing": f"RGB, {resize} resize to a square; {scaling}",
        "architecture": f"imported from {os.path.basename(str(source))} ({origin})",
        "threshold": outputs.DEFAULT_THRESHOLD,
    }
