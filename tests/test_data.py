import numpy as np
import pytest

from imgclf import data
from imgclf.cli import UsageError


def test_stratified_split_is_seeded_and_keeps_class_shares():
    labels = [0] * 50 + [1] * 30
    train, validation = data.stratified_split(labels, 0.2, seed=3)
    again_train, again_validation = data.stratified_split(labels, 0.2, seed=3)
    assert list(validation) == list(again_validation) and list(train) == list(again_train)
    assert sorted([*train, *validation]) == list(range(80))
    assert sum(labels[i] == 0 for i in validation) == 10 and sum(labels[i] == 1 for i in validation) == 6


def test_split_that_leaves_a_class_empty_is_refused():
    with pytest.raises(UsageError, match=r"`--validation-split` 0.5 leaves no training image of class index 1"):
        data.stratified_split([0, 0, 0, 0, 1], 0.5, seed=0)


def test_batches_pair_each_image_with_its_label():
    images = np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(10)])
    labels = np.arange(10, dtype=np.int32) * 100
    indices = np.array([1, 2, 4, 6, 7, 9])
    seen = []
    for batch_images, batch_labels in data.batches(images, labels, indices, 4, shuffle_seed=1):
        assert batch_images.dtype.name == "float32"
        for image, label in zip(batch_images.numpy(), batch_labels.numpy()):
            assert label == image[0, 0, 0] * 100
            seen.append(int(image[0, 0, 0]))
    assert sorted(seen) == list(indices)


def test_augmentation_changes_training_images_but_keeps_their_shape():
    augmentation = data.make_augmentation(seed=0)
    batch = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    out = np.asarray(augmentation(batch, training=True))
    assert out.shape == batch.shape and not np.allclose(out, batch)
    np.testing.assert_allclose(np.asarray(augmentation(batch, training=False)), batch)


def test_affine_with_no_range_is_the_identity_or_a_mirror_image():
    batch = np.random.default_rng(0).uniform(0, 255, (16, 20, 24, 3)).astype(np.float32)
    still = data.RandomAffine(rotation=0, zoom=0, shear=0, shift=0, flip=False, seed=1)
    np.testing.assert_allclose(np.asarray(still(batch, training=True)), batch, atol=1e-3)
    mirror = data.RandomAffine(rotation=0, zoom=0, shear=0, shift=0, flip=True, seed=1)
    out = np.asarray(mirror(batch, training=True))
    flipped = [np.allclose(o, b[:, ::-1], atol=1e-3) for o, b in zip(out, batch)]
    unchanged = [np.allclose(o, b, atol=1e-3) for o, b in zip(out, batch)]
    assert all(f or u for f, u in zip(flipped, unchanged)) and 0 < sum(flipped) < 16


def test_affine_shift_moves_content_by_the_drawn_amount():
    image = np.zeros((1, 21, 21, 1), np.float32)
    image[0, 10, 10, 0] = 1.0  # One bright pixel in the centre.
    shift = data.RandomAffine(rotation=0, zoom=0, shear=0, shift=0.2, flip=False, seed=3)
    moved = np.asarray(shift(image, training=True))[0, ..., 0]
    row, column = np.unravel_index(moved.argmax(), moved.shape)
    assert (row, column) != (10, 10) and abs(row - 10) <= 5 and abs(column - 10) <= 5


def test_worker_shards_of_a_shuffled_epoch_are_disjoint_and_cover_it():
    images = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1).repeat(3, axis=3)
    labels = np.arange(20, dtype=np.int32)
    indices = np.arange(20)

    def labels_seen(shard):
        dataset = data.batches(images, labels, indices, 3, shuffle_seed=7, shard=shard, drop_remainder=True)
        return [label for _, batch_labels in dataset for label in batch_labels.numpy().tolist()]

    first, second = labels_seen((2, 0)), labels_seen((2, 1))
    assert len(first) == len(second) == 9  # 10 each, in whole batches of 3.
    assert not set(first) & set(second)
    assert first != sorted(first)  # Shuffled, in the same seeded order on both workers.


def test_too_few_images_for_every_device_a_batch_is_refused():
    import tensorflow as tf

    class TwoReplicas:
        num_replicas_in_sync = 2

    images = np.zeros((5, 4, 4, 3), np.uint8)
    with pytest.raises(UsageError, match="`--batch-size` 4 on each of 2 devices needs at least 8 training images"):
        data.replica_batches(TwoReplicas(), images, np.zeros(5), np.arange(5), 4, seed=1)
    one = tf.distribute.get_strategy()
    assert data.replica_batches(one, images, np.zeros(5, np.float32), np.arange(5), 4).cardinality() == 2
