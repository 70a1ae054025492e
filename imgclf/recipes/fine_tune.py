"""fine-tune: from the features recipe's trained head, the whole pretrained backbone trained too, at a low
learning rate, on mildly augmented images.

Batch normalization stays in inference mode (its layers frozen: with batch statistics
instead, fine-tuning ~700 X-rays fell from 79% to 72%; in inference mode it reached
88%). Each layer is set on its own: on a model loaded from model.h5, setting the
network's `trainable` leaves the nested backbone's layers as they were. The saved model
has its backbone frozen again, so --init-from and every export see the usual structure.
"""

import keras

from imgclf import devices, models
from imgclf.recipes.job import Result, augmentation, train_or_restore

NAME = "fine-tune"
LEARNING_RATE = 3e-4  # peak, on one device: about a seventh of the head's
EPOCHS = 10
MIN_EPOCHS = 2  # as a candidate of `auto`: fewer are not worth their minutes (chosen alone: at least 1)
# Small rotations, zooms and shifts, flips (not of grayscale images); no shear: nothing that makes an X-ray
# another X-ray.
AUGMENTATION = {"rotation": 0.03, "zoom": 0.1, "shear": 0.0, "shift": 0.05, "flip": True}


# On CPUs a fine-tuning step takes at most this many images: as fast per image as 32, and the memory
# TensorFlow's CPU kernels keep for a step's activations (oneDNN's allocator holds it to the end of the run)
# is 0.7 GB smaller for Lite0 (bench/fine_tune_speed.py: peak 1.8-1.9 GB against 2.6). GPUs take --batch-size.
CPU_BATCH_SIZE = 16

# A fine-tuning image (forward and backward passes, the update, augmentation) costs this many images of the
# frozen backbone's forward pass: 2.5 to 4 measured (bench/fine_tune_speed.py, bench/RESULTS.md section 14).
# The lowest: a guess on the long side would skip a fine-tuning that fits.
FORWARD_IMAGES_PER_IMAGE = 2.5


def _minimum(train_images, validation_images, forward_seconds):
    """Seconds MIN_EPOCHS take, at `forward_seconds` per image through the frozen backbone."""
    return MIN_EPOCHS * forward_seconds * (train_images * FORWARD_IMAGES_PER_IMAGE + validation_images)


def too_long(train_images, validation_images, forward_seconds, seconds_left):
    """Why MIN_EPOCHS of fine-tuning cannot fit in `seconds_left`, at `forward_seconds` per image through the frozen
    backbone (the first pass's pace); None when they may. Lets `auto` not keep images it would not train on."""
    need = _minimum(train_images, validation_images, forward_seconds)
    if need <= seconds_left:
        return None
    return (
        f"{MIN_EPOCHS} epochs need about {need / 60:.1f} min at the pace of the features pass; "
        f"{max(0.0, seconds_left) / 60:.1f} min will be left"
    )


def minimum_seconds(job):
    """Seconds MIN_EPOCHS take, estimated at the first pass's pace (decoding included) in Keras: what `auto` keeps
    for them when a candidate runs before this one."""
    split = job.split
    pace = job.decoded.seconds * job.keras_slowdown / max(1, len(split.paths))
    return _minimum(len(split.train), len(split.validation), pace)


def network(config):
    """(architecture, image size) this recipe trains under `config`."""
    return config.arch, config.image_size


def describe(config):
    """What this recipe trains under `config`, in a line."""
    return f"{config.arch} at {config.image_size} px, every layer but batch normalization trained from the head"


def batch_size(config):
    """Images per fine-tuning step on each device: --batch-size, at most CPU_BATCH_SIZE without a GPU."""
    return config.batch_size if devices.has_gpu() else min(config.batch_size, CPU_BATCH_SIZE)


def set_backbone_trainable(model, trainable):
    """Makes the backbone's layers trainable (batch normalization excepted) or frozen again."""
    backbone = models.backbone(model)
    backbone.trainable = trainable
    for layer in backbone.layers:
        layer.trainable = trainable and not isinstance(layer, keras.layers.BatchNormalization)


def run(job, done, deadline=None, min_epochs=0):
    """Fine-tunes a copy of the features recipe's model: a Result, or why it was skipped."""
    config, start = job.config, done["features"]
    with job.strategy.scope():
        model = keras.models.clone_model(start.model)
        model.set_weights(start.model.get_weights())
        set_backbone_trainable(model, True)
    images = job.images(config.image_size)
    history, skipped = train_or_restore(
        job, model, images, NAME, learning_rate=LEARNING_RATE, epochs=config.epochs or EPOCHS,
        augment=augmentation(job, AUGMENTATION), deadline=deadline, min_epochs=min_epochs,
        batch_size=batch_size(config),
    )  # fmt: skip
    if skipped:
        return skipped
    set_backbone_trainable(model, False)
    return Result(NAME, config.arch, config.image_size, model, model, images, history, LEARNING_RATE)
