"""Benchmark 1: training images/s of the classic network, three ways, in one run.

(a) the classic recipe: ImageDataGenerator(rescale, shear, zoom, flip).flow_from_directory + fit;
(b) train_cnn.py --arch simple (decoding, checking and caching counted in its time);
(c) the compute bound: the same model and augmentation fed from decoded tensors already in memory.
All at 64x64, batch 32, 3 epochs, validating on Test_Set after each epoch as the classic tutorial did.

Usage: python bench/train_throughput.py [--epochs 3]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import machine, photos_dir, read_metadata, run_script, table  # noqa: E402

SIZE, BATCH = 64, 32


def classic_network(rescale_inside):
    import keras
    from keras import layers

    stack = [keras.Input((SIZE, SIZE, 3))]
    if rescale_inside:
        stack.append(layers.Rescaling(1.0 / 255))
    stack += [
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(1, activation="sigmoid", dtype="float32"),
    ]
    model = keras.Sequential(stack)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def classic_recipe(data, epochs):
    """(a) As the tutorials wrote it: decode, augment and rescale every image on every epoch."""
    import tensorflow as tf

    generator = tf.keras.preprocessing.image.ImageDataGenerator(
        rescale=1.0 / 255, shear_range=0.2, zoom_range=0.2, horizontal_flip=True
    )
    flow = dict(target_size=(SIZE, SIZE), batch_size=BATCH, class_mode="binary")
    training = generator.flow_from_directory(str(data / "Training_Set"), **flow)
    test = tf.keras.preprocessing.image.ImageDataGenerator(rescale=1.0 / 255).flow_from_directory(
        str(data / "Test_Set"), **flow
    )
    model = classic_network(rescale_inside=False)
    started = time.time()
    model.fit(training, validation_data=test, epochs=epochs, verbose=0)
    return training.samples * epochs / (time.time() - started)


def compute_bound(data, epochs, policy):
    """(c) The same model and augmentation layers, fed from decoded images already in memory."""
    import keras
    import numpy as np
    import tensorflow as tf

    from imgclf import data as pipeline
    from imgclf import folders

    def decoded(folder):
        paths, labels, _ = folders.scan_class_folders(folder)
        images = pipeline.decode_all(paths, SIZE, cache_bytes=2**40, cache_file=None).inputs
        return images, np.asarray(labels, np.float32)[:, None]

    train_images, train_labels = decoded(data / "Training_Set")
    test_images, test_labels = decoded(data / "Test_Set")
    keras.mixed_precision.set_global_policy(policy)
    augmentation = pipeline.make_augmentation(seed=0)
    training = (
        tf.data.Dataset.from_tensor_slices((train_images, train_labels))
        .shuffle(len(train_images))
        .batch(BATCH)
        .map(lambda x, y: (augmentation(tf.cast(x, tf.float32), training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    test = tf.data.Dataset.from_tensor_slices((tf.cast(test_images, tf.float32), test_labels)).batch(BATCH)
    model = classic_network(rescale_inside=True)
    started = time.time()
    model.fit(training, validation_data=test, epochs=epochs, verbose=0)
    rate = len(train_images) * epochs / (time.time() - started)
    keras.mixed_precision.set_global_policy("float32")
    return rate


def product(data, epochs, precision):
    """(b) train_cnn.py, timed as a whole: decoding, checking, caching and every epoch."""
    with tempfile.TemporaryDirectory() as model_dir:
        wall, _, _ = run_script(
            "train_cnn.py", "--data-dir", data, "--model-dir", model_dir, "--arch", "simple",
            "--epochs", epochs, "--batch-size", BATCH, "--patience", 100, "--mixed-precision", precision,
        )  # fmt: skip
        training = read_metadata(model_dir)["training"]
    images = training["images"] * epochs
    return images / (training["decode_seconds"] + training["fit_seconds"]), training, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    epochs = parser.parse_args().epochs
    data = photos_dir()
    print(f"Machine: {machine()}")
    rows = []
    classic = classic_recipe(data, epochs)
    rows.append(["(a) classic ImageDataGenerator recipe", "float32", f"{classic:.0f}", "1.00"])
    for precision, policy in (("off", "float32"), ("on", "mixed_bfloat16")):
        rate, training, wall = product(data, epochs, precision)
        bound = compute_bound(data, epochs, policy)
        rows.append([f"(b) train_cnn.py --arch simple (decode {training['decode_seconds']:.0f} s counted)",
                     policy, f"{rate:.0f}", f"{rate / classic:.2f}"])  # fmt: skip
        rows.append(["(c) compute bound: in-memory tensors", policy, f"{bound:.0f}", f"{bound / classic:.2f}"])
        rows.append([f"(b)/(c) with {policy}", "", "", f"{rate / bound:.2f}"])
    print(f"\nTraining throughput, simple network, {SIZE}x{SIZE}, batch {BATCH}, {epochs} epochs:")
    print(table(rows, ["pipeline", "arithmetic", "images/s", "vs (a)"]))


if __name__ == "__main__":
    main()
