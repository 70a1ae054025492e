"""scratch: a network trained from random weights on augmented images: `compact` (or --arch simple).

As a candidate of `auto` beside a pretrained --arch it is the compact network at its own
96 px; with --arch compact or simple it is that network (or --init-from's) as given.
"""

from imgclf import models
from imgclf.recipes.job import Result, augmentation, train_or_restore

NAME = "scratch"
ARCH = "compact"  # beside a pretrained --arch
MIN_EPOCHS = models.EPOCHS // 2  # fewer, to fit a budget, and it is not worth its minutes


def network(config):
    """(architecture, image size) this recipe trains under `config`."""
    if models.is_pretrained(config.arch):
        return ARCH, models.NATIVE_IMAGE_SIZE[ARCH]
    return config.arch, config.image_size


def describe(config):
    """What this recipe trains under `config`, in a line."""
    arch, size = network(config)
    return f"{arch} at {size} px from random weights, on augmented images"


def run(job, done, deadline=None, min_epochs=0):
    """Trains the network of `network(config)` on augmented images: a Result, or why it was skipped."""
    config = job.config
    arch, size = network(config)
    if arch == config.arch:
        model = job.model
    else:
        with job.strategy.scope():
            model = models.build_model(arch, size, len(job.split.class_names))
    images = job.images(size)
    history, skipped = train_or_restore(
        job, model, images, NAME, learning_rate=config.learning_rate, epochs=config.epochs or models.EPOCHS,
        augment=augmentation(job, {}), deadline=deadline, min_epochs=min(min_epochs, config.epochs or min_epochs),
    )  # fmt: skip
    if skipped:
        return skipped
    return Result(NAME, arch, size, model, model, images, history, config.learning_rate)
