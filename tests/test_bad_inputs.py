"""The bad-input matrix: every format and odd file a user's folder can hold, in training and prediction."""

import os

import numpy as np
import pytest
from conftest import class_image, write_class_tree
from PIL import Image

import config
from imgclf import artifacts, decoding, folders, images, labeling, splits, training


def _rgb(size=(30, 20)):
    return class_image(0, 7, size=max(size)).resize(size)


# name -> function(path) writing the file; all must load as (16, 16, 3) uint8.
READABLE = {
    "photo.jpg": lambda p: _rgb().save(p, "JPEG"),
    "graphic.png": lambda p: _rgb().save(p, "PNG"),
    "animated.gif": lambda p: _rgb().save(p, "GIF", save_all=True, append_images=[_rgb().rotate(90)]),
    "bitmap.bmp": lambda p: _rgb().save(p, "BMP"),
    "modern.webp": lambda p: _rgb().save(p, "WEBP"),
    "scan.tiff": lambda p: _rgb().save(p, "TIFF"),
    "gray.png": lambda p: _rgb().convert("L").save(p),
    "palette.png": lambda p: _rgb().convert("P").save(p),
    "alpha.png": lambda p: _rgb().convert("RGBA").save(p),
    "print.jpg": lambda p: _rgb().convert("CMYK").save(p, "JPEG"),
    "deep.png": lambda p: Image.fromarray(np.full((9, 9), 40000, np.uint16)).save(p),
    "UPPER.JPG": lambda p: _rgb().save(p, "JPEG"),
    "really-a-jpeg.png": lambda p: _rgb().save(p, "JPEG"),
    "one-pixel.png": lambda p: Image.new("RGB", (1, 1), (9, 9, 9)).save(p),
    "sliver.png": lambda p: Image.new("RGB", (3000, 12), (200, 0, 0)).save(p),
    "name with spaces, commas & ümlauts 猫.jpg": lambda p: _rgb().save(p, "JPEG"),
}
UNREADABLE = {
    "zero-bytes.jpg": lambda p: open(p, "wb").close(),
    "truncated.jpg": lambda p: open(p, "wb").write(b"\xff\xd8\xff\xe0\x00\x10JFIF"),
    "truncated.png": lambda p: open(p, "wb").write(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00"),
    "notes.jpg": lambda p: open(p, "w").write("a text file named like a photo"),
    "noise.jpg": lambda p: open(p, "wb").write(np.random.default_rng(0).bytes(3000)),
    "dangling.jpg": lambda p: os.symlink(os.path.join(os.path.dirname(p), "missing-target.jpg"), p),
}
JUNK = [".DS_Store", "._photo.jpg", "Thumbs.db", "desktop.ini"]


@pytest.mark.parametrize("name", sorted(READABLE))
def test_readable_formats_load(tmp_path, name):
    path = tmp_path / name
    READABLE[name](str(path))
    pixels = images.load_image(str(path), 16)
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_files_give_a_reason(tmp_path, name):
    path = tmp_path / name
    UNREADABLE[name](str(path))
    with pytest.raises(images.ImageError) as error:
        images.load_image(str(path), 16)
    assert str(error.value)


def _messy_folder(root):
    """A class folder holding every readable, unreadable and junk case, plus a nested folder and a symlink."""
    root.mkdir(parents=True)
    for name, make in {**READABLE, **UNREADABLE}.items():
        make(str(root / name))
    for name in JUNK:
        (root / name).write_bytes(b"junk")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "photo.jpg").write_bytes(b"junk")
    (root / "nested" / "deeper").mkdir(parents=True)
    _rgb().save(root / "nested" / "deeper" / "inner.jpg")
    os.symlink(root / "photo.jpg", root / "link-to-photo.jpg")


def test_training_counts_every_file_as_used_or_skipped(tmp_path):
    data_dir = tmp_path / "Dataset"
    write_class_tree(data_dir / "Training_Set", ["cats"], per_class=6)
    _messy_folder(data_dir / "Training_Set" / "dogs")
    before = {p: p.read_bytes() for p in (data_dir / "Training_Set" / "dogs").rglob("*") if p.is_file()}
    settings = config.TrainConfig(data_dir=str(data_dir), model_dir=str(tmp_path / "m"), image_size=16)
    split = splits.scan(training.resolve_config(settings))
    found = len(split.paths)
    # Readable + unreadable + nested + symlink; junk files are not candidates at all.
    assert found == 6 + len(READABLE) + len(UNREADABLE) + 2
    errors = decoding.decode_all(split.paths, 16, 2**30, None).errors
    os.makedirs(artifacts.staged(str(tmp_path)))  # where a run writes its reports until they are committed
    split = splits.drop_unreadable(split, errors, str(tmp_path))
    used = len(split.train) + len(split.validation)
    skipped = open(artifacts.staged(str(tmp_path), "skipped_files.txt")).read().splitlines()
    assert used + len(skipped) == found and len(skipped) == len(UNREADABLE)
    assert {line.split("\t")[0].rsplit("/", 1)[1] for line in skipped} == set(UNREADABLE)
    after = {p: p.read_bytes() for p in (data_dir / "Training_Set" / "dogs").rglob("*") if p.is_file()}
    assert before == after  # Sources are never modified.


def test_prediction_gives_every_file_exactly_one_row(tmp_path):
    _messy_folder(tmp_path / "in")
    paths = folders.list_inputs([str(tmp_path / "in")])
    seen = []
    for batch in decoding.batches(paths, 16, 7):
        seen.extend(batch.errors)
        assert batch.images.shape[1:] == (16, 16, 3)
    assert len(seen) == len(paths) == len(READABLE) + len(UNREADABLE) + 2
    failed = {os.path.basename(p) for p, e in zip(paths, seen) if e}
    assert failed == set(UNREADABLE)
    assert labeling.safe_cell("=cmd|' /C calc'!A0").startswith("'")
