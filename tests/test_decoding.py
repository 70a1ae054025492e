import os
import threading

import numpy as np
import pytest
from conftest import class_image

from imgclf import decoding


def _images(folder, count, size):
    """`count` striped PNGs of `size` px in `folder`, classes alternating; their paths."""
    paths = []
    for i in range(count):
        path = folder / f"{i}.png"
        class_image(i % 2, i, size=size).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def files(tmp_path):
    paths = _images(tmp_path, 7, 30)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths.insert(3, str(tmp_path / "broken.jpg"))
    return paths


def test_decode_keeps_order_and_reports_unreadable_files(files):
    decoded = decoding.decode_all(files, 24, cache_bytes=10**9, cache_file=None)
    images, errors = decoded.inputs, decoded.errors
    assert images.shape == (8, 24, 24, 3) and not isinstance(images, np.memmap)
    assert [index for index, _ in errors] == [3]
    assert "not an image" in errors[0][1]
    # Striped images alternate horizontal/vertical by class: order must match the file list.
    for index, path_index in ((0, 0), (1, 1), (4, 3), (5, 4)):
        vertical = images[index].astype(float).std(axis=0).mean() < images[index].astype(float).std(axis=1).mean()
        assert vertical == (path_index % 2 == 1)


def test_over_budget_cache_is_a_file_on_disk(files, tmp_path):
    in_ram = decoding.decode_all(files, 24, cache_bytes=10**9, cache_file=None).inputs
    cache_file = tmp_path / "cache.npy"
    decoded = decoding.decode_all(files, 24, cache_bytes=100, cache_file=str(cache_file))
    on_disk, errors = decoded.inputs, decoded.errors
    assert isinstance(on_disk, np.memmap) and cache_file.stat().st_size >= in_ram.nbytes
    np.testing.assert_array_equal(np.asarray(on_disk), in_ram)
    assert len(errors) == 1


def test_features_pass_keeps_the_images_until_told_they_will_not_be_needed(tmp_path):
    paths = _images(tmp_path, 10, 16)

    def backbone(pixels):  # four features of each image: the mean of each channel and of all
        means = pixels.mean(axis=(1, 2))
        return np.concatenate([means, means.mean(axis=1, keepdims=True)], axis=1) + 1

    asked = []
    for answer in (True, False):

        def still_keep(seconds, answer=answer):
            asked.append(seconds)
            return answer

        images = np.zeros((10, 16, 16, 3), np.uint8)
        decoded = decoding.extract_features(backbone, 4, paths, 16, batch_size=2, images=images, paced=still_keep)
        kept = decoding.PACE_BATCHES * 2  # the images written before the pace was known
        assert decoded.inputs.shape == (10, 4) and np.all(decoded.inputs.any(axis=1))  # every file's features
        assert images[:kept].any(axis=(1, 2, 3)).all()
        assert images[kept:].any(axis=(1, 2, 3)).all() == answer  # told False: the later images are not written
    assert len(asked) == 2 and all(seconds > 0 for seconds in asked)  # asked once per pass, with the pace


def test_batches_come_in_file_order_whatever_the_threads_finish_first(tmp_path):
    paths = _images(tmp_path, 23, 8)
    seen = [batch.images for batch in decoding.batches(paths, 8, 3)]
    assert [len(images) for images in seen] == [3] * 7 + [2]
    for path, image in zip(paths, np.concatenate(seen)):
        np.testing.assert_array_equal(image, decoding.image_io.load_image(path, 8))


def test_stopping_early_leaves_no_decoding_thread_behind(tmp_path):
    paths = _images(tmp_path, 40, 8)
    batches = decoding.batches(paths, 8, 2)
    next(batches)
    batches.close()  # a break, or Ctrl-C in the caller
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("decode")]
    assert os.cpu_count() and decoding.THREADS == os.cpu_count()
