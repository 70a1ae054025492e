"""Fine-tuning speed, side by side in one run: the frozen backbone's forward pass (what the features pass
runs), a fine-tuning step with the recipe's augmentation, and the same step without augmentation.

The ratio of a fine-tuning image's time to a forward image's time is what `auto` uses to tell, from the
features pass it has just timed, whether fine-tuning can fit the budget (imgclf/recipes/fine_tune.py).

    python bench/fine_tune_speed.py [--arch efficientnet_lite0] [--batch-size 32] [--steps 6]
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf
from common import machine

from imgclf import data, fitting, models
from imgclf.recipes import fine_tune


def forward_rate(backbone, images, batch_size, steps):
    forward = tf.function(lambda pixels: backbone(pixels, training=False), reduce_retracing=True)
    batch = images[:batch_size].astype(np.float32)
    forward(batch)  # compiles
    started = time.perf_counter()
    for _ in range(steps):
        np.asarray(forward(batch))
    return steps * batch_size / (time.perf_counter() - started)


def fine_tune_rate(model, images, batch_size, steps, augmentation, in_step=False):
    """Training images/s; `augmentation` in the input pipeline (tf.data), or `in_step`: a first layer of the
    network trained, run by the training step itself on the same threads."""
    keras.utils.set_random_seed(0)
    trainee = keras.models.clone_model(model)
    trainee.set_weights(model.get_weights())
    if models.backbone(trainee):  # a network trained whole (compact) has every layer trainable already
        fine_tune.set_backbone_trainable(trainee, True)
    if in_step:
        pixels = keras.Input(model.input_shape[1:])
        trainee, augmentation = keras.Model(pixels, trainee(augmentation(pixels))), None
    fitting.compile_model(trainee, 2, fine_tune.LEARNING_RATE)
    labels = np.arange(len(images)) % 2
    dataset = data.batches(images, labels.astype(np.float32), np.arange(len(images)), batch_size, shuffle_seed=0,
                           augmentation=augmentation).repeat()  # fmt: skip
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter())

    trainee.fit(dataset, steps_per_epoch=steps + 2, epochs=1, verbose=0, callbacks=[Timer()])
    return steps * batch_size / (times[-1] - times[1])  # the first step compiles; the next one starts the clock


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    size = models.NATIVE_IMAGE_SIZE[args.arch]
    model = models.build_model(args.arch, size, 2)
    images = np.random.default_rng(0).integers(0, 256, (args.batch_size * 4, size, size, 3), dtype=np.uint8)
    forward = forward_rate(models.backbone(model), images, args.batch_size, args.steps)
    plain = fine_tune_rate(model, images, args.batch_size, args.steps, None)
    augmented = fine_tune_rate(
        model, images, args.batch_size, args.steps, data.make_augmentation(0, fine_tune.AUGMENTATION)
    )
    in_step = fine_tune_rate(
        model, images, args.batch_size, args.steps, data.make_augmentation(0, fine_tune.AUGMENTATION), in_step=True
    )
    print(f"Machine: {machine()}")
    print(f"{args.arch} at {size} px, batch {args.batch_size}, {args.steps} timed steps each:")
    print("| pass | images/s | forward's time per image, times |")
    print("| --- | --- | --- |")
    for name, rate in (("forward (frozen backbone)", forward), ("fine-tune step, no augmentation", plain),
                       ("fine-tune step, the recipe's augmentation in the input pipeline", augmented),
                       ("fine-tune step, the recipe's augmentation in the step", in_step)):  # fmt: skip
        print(f"| {name} | {rate:.1f} | {forward / rate:.1f}x |")


if __name__ == "__main__":
    main()
