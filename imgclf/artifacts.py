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

from imgclf.cli import UsageError

MODEL_FILE = "model.h5"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"


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


def sha256(path):
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(model, model_dir, metadata):
    """Writes model.h5, model.weights.h5 and metadata.json (with both files' SHA-256) into `model_dir`."""
    hashes = {}
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # Keras warns that HDF5 is "legacy"; model.h5 is what users expect.
    try:
        save_model_file = functools.partial(model.save, include_optimizer=False)  # predict needs no optimizer
        for name, save in ((MODEL_FILE, save_model_file), (WEIGHTS_FILE, model.save_weights)):
            with atomic_path(os.path.join(model_dir, name)) as temporary:
                save(temporary)
                hashes[name] = sha256(temporary)
    finally:
        absl_logger.setLevel(level)
    write_text(os.path.join(model_dir, METADATA_FILE), json.dumps({**metadata, "sha256": hashes}, indent=2) + "\n")


def read_metadata(model_file):
    """The metadata.json beside `model_file`, or UsageError saying it is missing or unreadable."""
    path = os.path.join(os.path.dirname(os.path.abspath(model_file)), METADATA_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise UsageError(f"{path}: not found. Train with train_cnn.py, which writes it beside the model.") from None
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: unreadable ({error}). Retrain, or restore it from a backup.") from None


def load_model(model_file):
    """Loads a model saved by `save_model` (safe mode on; no optimizer needed for prediction)."""
    import keras

    if not os.path.isfile(model_file):
        raise UsageError(f"{model_file}: model file not found. Train one with train_cnn.py or pass --model.")
    try:
        return keras.models.load_model(model_file, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a damaged file; all mean the same to the user.
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise UsageError(f"{model_file}: not a valid model file ({reason}).") from None
