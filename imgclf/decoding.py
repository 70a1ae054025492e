"""Files into arrays, on every core, without TensorFlow: the batches predict.py labels and the one decoding
pass of training.

`load_image` decodes each file; a pool of threads decodes the next batches while the
caller works on this one (Pillow releases the GIL while it decodes, and so do the
runtimes while they compute). A file that cannot be read has zeros for pixels and
its reason beside it, so a bad file never stops a pass.
"""

import collections
import concurrent.futures
import dataclasses
import itertools
import json
import os
import time

import numpy as np

from imgclf import artifacts, duplicates, progress
from imgclf import images as image_io

THREADS = os.cpu_count() or 1  # decoding threads; batches decoded ahead: one more than threads


@dataclasses.dataclass
class Batch:
    """One batch of decoded files."""

    images: np.ndarray  # (n, size, size, 3) uint8; zeros for a file that could not be read
    errors: list  # "" for a file read fine, else why it could not be
    thumbnails: np.ndarray  # (n, 32, 32, 3) uint8 for `duplicates.find`, when asked for; else empty


def batches(paths, image_size, batch_size, resize="bilinear", grayscale=False, thumbnails=False):
    """Yields a `Batch` for every `batch_size` files of `paths`, in order, decoded ahead on `THREADS` threads.

    `grayscale`: colour reduced to grey (see `images.load_image`). Stopping early (a
    break, Ctrl-C) cancels the batches not started.
    """

    def load(start):
        names = paths[start : start + batch_size]
        pixels = np.zeros((len(names), image_size, image_size, 3), np.uint8)
        small = np.zeros((len(names) if thumbnails else 0, *(duplicates.THUMBNAIL_SIZE,) * 2, 3), np.uint8)
        errors = [""] * len(names)
        for i, path in enumerate(names):
            try:
                pixels[i] = image_io.load_image(os.fsdecode(path), image_size, resize, grayscale)
            except image_io.ImageError as error:
                errors[i] = str(error)
            else:
                if thumbnails:
                    small[i] = duplicates.thumbnail(pixels[i])
        return Batch(pixels, errors, small)

    starts = iter(range(0, len(paths), batch_size))
    pool = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="decode")
    try:
        pending = collections.deque(pool.submit(load, start) for start in itertools.islice(starts, THREADS + 1))
        while pending:
            batch = pending.popleft().result()
            pending.extend(pool.submit(load, start) for start in itertools.islice(starts, 1))
            yield batch
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclasses.dataclass
class Decoded:
    """What the one decoding pass over the training files gives."""

    inputs: np.ndarray  # decoded images (n, size, size, 3) uint8, or feature vectors (n, dimensions) float32
    errors: list  # (index, reason) of each file that could not be read
    thumbnails: np.ndarray  # (n, 32, 32, 3) uint8 thumbnails, for `duplicates.find`
    seconds: float  # how long the pass took


def decode_all(paths, image_size, cache_bytes, cache_file):
    """Decodes every file once into an array, in RAM or (over `cache_bytes`) on disk; a `Decoded`.

    `inputs` is an np.memmap backed by `cache_file` when it is larger than `cache_bytes`.
    On a terminal a progress bar shows the pass.
    """
    images = image_cache(len(paths), image_size, cache_bytes, cache_file)

    def store(start, batch_images):
        images[start : start + len(batch_images)] = batch_images

    return _decode_pass(paths, image_size, 64, images, store)


def image_cache(count, image_size, cache_bytes, cache_file):
    """An uninitialized uint8 array for `count` decoded images: in RAM, or over `cache_bytes` a memory map of
    `cache_file`."""
    shape = (count, image_size, image_size, 3)
    if np.prod(shape) <= cache_bytes:
        return np.empty(shape, np.uint8)
    return np.lib.format.open_memmap(cache_file, mode="w+", dtype=np.uint8, shape=shape)


PACE_BATCHES = 2  # batches after the first (which may compile or warm up) that time the backbone for `paced`


def extract_features(forward, dimensions, paths, image_size, batch_size=16, images=None, paced=None):
    """Decodes every file once and runs it through a frozen backbone: one feature vector per file; a `Decoded`.

    What a pretrained model's head is trained on. `forward` maps a float32 batch of
    images to its `dimensions`-long feature vectors (a runtime's runner, see
    `runtimes`). Only the features are kept, not the images (8000 photos: 41 MB
    instead of 1.2 GB at 224 px), unless `images` (an array from `image_cache`) is
    given to keep them in too, for fine-tuning; the decoding of the next batches
    overlaps the backbone's work on this one. A file that could not be read has zeros
    for features (batches of 16: ONNX Runtime's memory arena for Lite0 holds 0.3 GB, against
    0.9 GB for 64, at the same speed). `paced(seconds per image)`, called once with the backbone's pace
    after its first batches, may answer False: the images are not kept from then on
    (the caller lets go of `images`); or raise, to stop the pass.
    """
    features = np.zeros((len(paths), dimensions), np.float32)
    timed = []  # (images, seconds) of each batch through the backbone; the first one may compile

    def store(start, batch_images):
        nonlocal images
        pixels = np.asarray(batch_images, np.float32)
        began = time.perf_counter()
        features[start : start + len(pixels)] = forward(pixels)
        timed.append((len(pixels), time.perf_counter() - began))
        if paced and len(timed) == PACE_BATCHES + 1:
            counted, seconds = np.sum(timed[1:], axis=0)
            images = images if paced(seconds / counted) is not False else None
        if images is not None:
            images[start : start + len(pixels)] = batch_images

    return _decode_pass(paths, image_size, batch_size, features, store)


def save_decoded(file, decoded, paths):
    """Keeps a first pass's features (not images), thumbnails and errors in `file`, for --resume."""
    with artifacts.atomic_path(file) as temporary, open(temporary, "wb") as handle:
        np.savez(
            handle, inputs=decoded.inputs, thumbnails=decoded.thumbnails, seconds=decoded.seconds,
            errors=json.dumps(decoded.errors), paths=json.dumps([os.fspath(path) for path in paths]),
        )  # fmt: skip


def load_decoded(file, paths):
    """The `Decoded` kept by `save_decoded` in `file` for these `paths`, or None when it is not there or not theirs."""
    try:
        with np.load(file) as kept:
            if json.loads(str(kept["paths"])) != [os.fspath(path) for path in paths]:
                return None
            errors = [tuple(error) for error in json.loads(str(kept["errors"]))]
            return Decoded(kept["inputs"], errors, kept["thumbnails"], float(kept["seconds"]))
    except (OSError, ValueError, KeyError):
        return None


def _decode_pass(paths, image_size, batch_size, inputs, store):
    started = time.time()
    thumbnails = np.zeros((len(paths), duplicates.THUMBNAIL_SIZE, duplicates.THUMBNAIL_SIZE, 3), np.uint8)
    errors = []
    start = 0
    bar = progress.Progress(len(paths), "images")
    try:
        for batch in batches(paths, image_size, batch_size, thumbnails=True):
            count = len(batch.errors)
            store(start, batch.images)
            thumbnails[start : start + count] = batch.thumbnails
            errors.extend((start + i, error) for i, error in enumerate(batch.errors) if error)
            start += count
            bar.advance(count)
    finally:
        bar.close()
    return Decoded(inputs, errors, thumbnails, time.time() - started)
