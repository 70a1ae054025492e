"""larger: the features recipe on the largest EfficientNet-Lite (Lite2, at 260 px), beside a smaller Lite.

A candidate of `auto` only, and its last: its pass over every file cannot stop halfway
and still give a model, so it runs on the time the others leave, when that pass fits.
It is skipped outright when less time is left than the first pass took (a larger
backbone is never faster), else timed on its first batches like the first pass.
Its features are kept in its checkpoints, so --resume does not compute them again.
"""

import os
import time

from imgclf import decoding, fitting, models, runtimes
from imgclf.recipes import features
from imgclf.recipes.job import Result

NAME = "larger"
ARCH = "efficientnet_lite2"
SMALLER = ("efficientnet_lite0", "efficientnet_lite1")  # the --arch values this candidate is tried beside
MIN_EPOCHS = 1
PASS_FILE = "features.npz"  # in its checkpoints


class _TooLong(Exception):
    """The pass, timed on its first batches, would end after the deadline."""


def network(config):
    """(architecture, image size) this recipe trains under `config`: --image-size scaled as the networks' own sizes
    are (224 px for Lite0 -> 260 px), so a smaller --image-size, chosen for speed, stays smaller."""
    native = models.NATIVE_IMAGE_SIZE
    return ARCH, round(config.image_size * native[ARCH] / native[config.arch])


def describe(config):
    """What this recipe trains under `config`, in a line."""
    arch, size = network(config)
    return f"{arch} at {size} px, frozen; its head trained on its own features (last, if its pass fits the time left)"


def run(job, done, deadline=None, min_epochs=0):
    """Computes the larger backbone's features of every file and trains its head: a Result, or why it was skipped."""
    config, paths = job.config, job.split.paths
    arch, size = network(config)
    kept = os.path.join(fitting.checkpoint_dir(config, NAME), PASS_FILE)
    decoded = decoding.load_decoded(kept, paths)
    if decoded is None and deadline and deadline - time.time() < job.decoded.seconds:
        return (
            f"its pass over every file is slower than the first pass ({job.decoded.seconds / 60:.1f} min), and "
            f"{max(0.0, deadline - time.time()) / 60:.1f} min are left"
        )
    # It trains on features: the pictures kept for the candidates before it go (unless the result of one holds them).
    job.kept_images.clear()
    with job.strategy.scope():
        model = models.build_model(arch, size, len(job.split.class_names))
    if decoded is None:
        began = time.time()

        def fits(seconds_per_image):
            need, left = len(paths) * seconds_per_image - (time.time() - began), deadline - time.time()
            if need > left:
                raise _TooLong(
                    f"its pass needs about {need / 60:.1f} min more at its pace on the first images; "
                    f"{max(0.0, left) / 60:.1f} min are left"
                )

        try:
            backbone = models.backbone(model)
            forward, _, runtime = runtimes.network_runner(backbone, config.runtime, os.path.dirname(kept), len(paths))
            job.backbones[arch, size] = getattr(forward, "path", None)
            print(f"Computing {arch} features of every image at {size}x{size} px on {runtime}...", flush=True)
            decoded = decoding.extract_features(
                forward, backbone.output.shape[-1], paths, size, paced=fits if deadline else None
            )
            del forward  # its runtime's memory goes back before the head trains
            runtimes.release_memory()
        except _TooLong as too_long:
            return str(too_long)
        os.makedirs(os.path.dirname(kept), exist_ok=True)
        decoding.save_decoded(kept, decoded, paths)
    history, head = features.train_head(job, model, decoded.inputs, NAME)
    return Result(NAME, arch, size, model, head, decoded.inputs, history, config.learning_rate)
