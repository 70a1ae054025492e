"""tf.data pipelines: batches of the decoded images (or features) for fitting, their augmentation, the splits.

The images were decoded once before (`decoding`), into one uint8 array: in RAM
when it fits the memory budget, else a file on disk (a NumPy memory map). That
pass was also the check of every file, so a bad file can never stop training
mid-epoch.
"""

import keras
import numpy as np
import tensorflow as tf

from imgclf.cli import UsageError


class RandomAffine(keras.layers.Layer):
    """Random flip, rotation, zoom, shear and shift of each image, in one bilinear resampling.

    Keras's RandomFlip, RandomRotation, RandomZoom, RandomShear and RandomTranslation
    resample every image once each; composing the five into one matrix and calling
    `keras.ops.image.affine_transform` once is 4x faster on a CPU and blurs less.
    Active only when called with `training=True`.

    Args:
        rotation: largest rotation, as a fraction of a full turn (0.05 is 18 degrees).
        zoom: zoom factors are drawn from [1 - zoom, 1 + zoom], per axis, as the classic generator did.
        shear: largest shear factor.
        shift: largest shift, as a fraction of the width and height.
        flip: mirror half of the images left to right.
        seed: seed of the random draws.
    """

    def __init__(self, rotation=0.05, zoom=0.2, shear=0.2, shift=0.1, flip=True, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rotation, self.zoom, self.shear, self.shift, self.flip, self.seed = (
            rotation,
            zoom,
            shear,
            shift,
            flip,
            seed,
        )

    def call(self, images, training=True):
        if not training:
            return images
        count = tf.shape(images)[0]
        height = tf.cast(tf.shape(images)[1], tf.float32)
        width = tf.cast(tf.shape(images)[2], tf.float32)

        def uniform(limit, offset):
            seed = None if self.seed is None else self.seed + offset
            return tf.random.uniform([count], -limit, limit, seed=seed)

        angle = uniform(self.rotation, 1) * 2 * np.pi
        zoom_x, zoom_y = 1 + uniform(self.zoom, 2), 1 + uniform(self.zoom, 3)
        if self.flip:
            zoom_x *= tf.sign(uniform(1.0, 4) + 1e-9)
        shear = uniform(self.shear, 5)
        shift_x, shift_y = uniform(self.shift, 6) * width, uniform(self.shift, 7) * height
        # Output pixel (x, y) samples input pixel centre + A @ ((x, y) - centre) + shift,
        # with A = rotation @ shear @ zoom.
        cos, sin = tf.cos(angle), tf.sin(angle)
        a00, a01 = cos * zoom_x, (cos * shear - sin) * zoom_y
        a10, a11 = sin * zoom_x, (sin * shear + cos) * zoom_y
        centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
        b0 = centre_x - a00 * centre_x - a01 * centre_y + shift_x
        b1 = centre_y - a10 * centre_x - a11 * centre_y + shift_y
        zeros = tf.zeros_like(a00)
        transform = tf.stack([a00, a01, b0, a10, a11, b1, zeros, zeros], axis=1)
        return keras.ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode="reflect")


def make_augmentation(seed, settings=None):
    """The training-time augmentation: `settings` (RandomAffine's arguments), by default the classic generator's
    flip, zoom and shear, plus small rotation and shifts."""
    return RandomAffine(seed=seed, name="augmentation", **(settings or {}))


def batches(
    images,
    labels,
    indices,
    batch_size,
    *,
    shuffle_seed=None,
    augmentation=None,
    shard=(1, 0),
    drop_remainder=False,
    weights=None,
):
    """A dataset of `(float32 images, labels)` batches of the cached `images[indices]`, or of
    `(images, labels, sample weights)` when `weights` (one per image) is given.

    Shuffling (when `shuffle_seed` is given) reorders only the indices, so the
    images are never copied into a shuffle buffer; the batch is gathered from
    the cache (RAM or memory map) as it is needed. `shard=(count, index)` keeps
    every count-th index of each epoch's order, starting at `index`.
    """
    labels = np.asarray(labels)
    label_dtype = labels.dtype
    weighted = weights is not None
    weights = np.asarray(weights if weighted else np.ones(len(labels)), np.float32)

    def gather(batch_indices):
        ordered = np.sort(batch_indices)  # In file order: a memory-mapped cache reads forwards.
        return images[ordered], labels[ordered], weights[ordered]

    def gather_tensor(batch_indices):
        batch_images, batch_labels, batch_weights = tf.numpy_function(
            gather, [batch_indices], (tf.as_dtype(images.dtype), label_dtype, tf.float32)
        )
        batch_images.set_shape((None, *images.shape[1:]))
        batch_labels.set_shape((None, *labels.shape[1:]))
        batch_weights.set_shape((None,))
        if weighted:
            return tf.cast(batch_images, tf.float32), batch_labels, batch_weights
        return tf.cast(batch_images, tf.float32), batch_labels

    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(indices), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.shard(*shard).batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(gather_tensor, num_parallel_calls=tf.data.AUTOTUNE)
    if augmentation is not None:
        dataset = dataset.map(
            lambda x, *rest: (augmentation(x, training=True), *rest), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def replica_batches(
    strategy, images, labels, indices, batch_size, *, seed=None, augment=True, what="training", weights=None
):
    """`batches` for every replica of a tf.distribute `strategy`: `batch_size` images each per step.

    With one replica this is `batches` itself. With several, each worker's input
    pipeline shuffles the indices in the same seeded order and keeps its own share
    (`shard`), so the workers read disjoint images, and its augmentation draws
    from its own seed. Every replica gets a full batch at every step (Keras 3
    fails on a replica's empty batch): the images after the last whole global
    batch, fewer than `batch_size * replicas`, wait for the next epoch's order
    (training), or are left out of the per-epoch validation scores (validation;
    training's final report still labels every validation image).

    Args:
        seed: shuffle and augment (training); None keeps the order (validation).
        augment: with a seed, apply the image augmentation (not to feature vectors): True for the default one,
            or a dict of `RandomAffine` settings.
        weights: one loss weight per image (class weights), or None.
    """
    replicas = strategy.num_replicas_in_sync
    shuffled = seed is not None
    augment = shuffled and augment
    if replicas == 1:
        augmentation = make_augmentation(seed, None if augment is True else augment) if augment else None
        return batches(
            images, labels, indices, batch_size, shuffle_seed=seed, augmentation=augmentation, weights=weights
        )
    if not shuffled:  # Validation: a fixed random order, so the images left out are a random few, not one class.
        indices = np.random.default_rng(0).permutation(indices)
    steps = steps_per_epoch(len(indices), batch_size, replicas)
    if steps == 0:
        raise UsageError(
            f"`--batch-size` {batch_size} on each of {replicas} devices needs at least {batch_size * replicas} "
            f"{what} images; there are {len(indices)}. Lower --batch-size or add images."
        )

    def pipeline(context):
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        shard = (context.num_input_pipelines, context.input_pipeline_id)
        settings = None if augment is True else augment
        augmentation = make_augmentation(seed + context.input_pipeline_id, settings) if augment else None
        dataset = batches(
            images,
            labels,
            indices,
            batch_size,
            shuffle_seed=seed,
            augmentation=augmentation,
            shard=shard,
            drop_remainder=True,
            weights=weights,
        )
        return dataset.take(steps * local_replicas)

    return strategy.distribute_datasets_from_function(pipeline)


def steps_per_epoch(count, batch_size, replicas=1):
    """Steps in one pass over `count` images: a last partial batch with one device, whole global batches with more."""
    if replicas == 1:
        return int(np.ceil(count / batch_size))
    return count // (batch_size * replicas)


def stratified_split(labels, fraction, seed, flag="--validation-split"):
    """Splits indices into (kept, held out) keeping each class's share; seeded. `flag` names the share in errors."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = max(1, int(round(len(members) * fraction)))
        if count >= len(members):
            raise UsageError(
                f"`{flag}` {fraction} leaves no training image of class index {label} "
                f"({len(members)} images). Add images, add a Test_Set, or lower it."
            )
        validation.extend(members[:count])
        train.extend(members[count:])
    return np.sort(train), np.sort(validation)
