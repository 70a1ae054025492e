"""Duplicate and leak detection: copies re-encoded and resized are found, distinct photos never paired."""

import csv
import shutil

import numpy as np
import pytest
from conftest import run_script
from PIL import Image

from imgclf import decoding, duplicates


def photo(seed, size=160):
    """A photo-like synthetic image: smooth random shapes (a random 6x6 grid, upscaled) plus fine grain."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    grain = rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.uint8(np.clip(np.asarray(coarse, np.float64) + grain, 0, 255)))


def copies_of(source, folder, stem):
    """Four copies of the image file `source`: the same bytes, JPEG quality 30, half size, PNG."""
    image = Image.open(source).convert("RGB")
    made = {f"{folder}/{stem}_same.jpg": "exact"}
    shutil.copyfile(source, f"{folder}/{stem}_same.jpg")
    image.save(f"{folder}/{stem}_q30.jpg", quality=30)
    image.resize((image.width // 2, image.height // 2)).save(f"{folder}/{stem}_half.jpg", quality=85)
    image.save(f"{folder}/{stem}_png.png")
    made.update({f"{folder}/{stem}_{kind}": "near" for kind in ("q30.jpg", "half.jpg", "png.png")})
    return made


def test_copies_reencoded_and_resized_are_found_and_distinct_photos_are_not_paired(tmp_path):
    originals = []
    for seed in range(60):
        path = tmp_path / f"photo_{seed}.jpg"
        photo(seed).save(path, quality=90)
        originals.append(str(path))
    expected = {}
    for seed in (3, 17, 42):
        expected.update(
            {
                copy: (originals[seed], kind)
                for copy, kind in copies_of(originals[seed], tmp_path, f"photo_{seed}").items()
            }
        )
    paths = originals + sorted(expected)
    decoded = decoding.decode_all(paths, 64, cache_bytes=2**30, cache_file=None)
    pairs = duplicates.find(decoded.thumbnails, paths)
    found = {(paths[p.first], paths[p.second]): p for p in pairs}
    # Each copy is paired with its original, with the right kind; the copies of one photo pair with each other too.
    for copy, (original, kind) in expected.items():
        assert found[(original, copy)].kind == kind, (copy, found.get((original, copy)))
    stems = {path: path.rsplit("/", 1)[1].split("_")[1].split(".")[0] for path in paths}
    assert all(stems[a] == stems[b] for a, b in found), "a pair of distinct photos"
    assert len(found) == 3 * (5 * 4 // 2)  # 3 photos, 5 files each: every pair among them, nothing else
    assert all(p.similarity >= 1 - duplicates.MAX_HASH_DISTANCE / 64 for p in pairs)


def test_a_hash_ignores_size_and_compression_but_not_content():
    image = np.asarray(photo(7, 224))
    half = np.asarray(Image.fromarray(image).resize((112, 112)).resize((224, 224)))
    other = np.asarray(photo(8, 224))
    hashes = duplicates.perceptual_hashes([duplicates.thumbnail(x) for x in (image, half, other)])
    distance = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    assert distance[0, 1] <= 2 and distance[0, 2] > duplicates.MAX_HASH_DISTANCE


@pytest.fixture(scope="module")
def leaky_dataset(tmp_path_factory):
    """Training_Set of two classes of distinct photos; Test_Set with 3 copies of training photos (exact,
    re-encoded, resized) among 6 photos of its own, and one training photo copied twice within Training_Set."""
    root = tmp_path_factory.mktemp("leaky") / "Dataset"
    seed = 100
    for name, tint in (("cats", (60, 0, 0)), ("dogs", (0, 0, 60))):
        for part, count in (("Training_Set", 14), ("Test_Set", 3)):
            folder = root / part / name
            folder.mkdir(parents=True)
            for _ in range(count):
                pixels = np.asarray(photo(seed), np.int64) + tint
                Image.fromarray(np.uint8(np.clip(pixels, 0, 255))).save(folder / f"p{seed}.jpg", quality=90)
                seed += 1
    source = root / "Training_Set" / "cats" / "p100.jpg"
    shutil.copyfile(source, root / "Test_Set" / "cats" / "exact.jpg")
    Image.open(source).save(root / "Test_Set" / "cats" / "reencoded.jpg", quality=30)
    dog = Image.open(root / "Training_Set" / "dogs" / "p120.jpg")
    dog.resize((80, 80)).save(root / "Test_Set" / "dogs" / "smaller.png")
    shutil.copyfile(root / "Training_Set" / "dogs" / "p121.jpg", root / "Training_Set" / "dogs" / "again.jpg")
    return root


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_training_lists_every_copy_and_warns_of_the_leak(leaky_dataset, tmp_path):
    result = run_script(
        "train_cnn.py", "--data-dir", leaky_dataset, "--model-dir", tmp_path / "m", "--arch", "simple",
        "--image-size", "32", "--epochs", "1", "--validation-split", "0.25",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = _rows(tmp_path / "m" / "duplicates.csv")
    leaks = {row["path"].rsplit("/", 1)[1]: row for row in rows if row["path_part"] != row["duplicate_of_part"]}
    assert set(leaks) == {"exact.jpg", "reencoded.jpg", "smaller.png"}
    assert leaks["exact.jpg"]["kind"] == "exact" and leaks["reencoded.jpg"]["kind"] == "near"
    assert leaks["exact.jpg"]["duplicate_of"].endswith("cats/p100.jpg")
    assert leaks["smaller.png"]["duplicate_of"].endswith("dogs/p120.jpg")
    assert all(row["path_part"] == "test" for row in leaks.values())
    # The two copies of one photo in Test_Set are a pair of their own.
    assert [row["kind"] for row in rows if row["path_part"] == row["duplicate_of_part"] == "test"] == ["near"]
    within = [row for row in rows if row["path_part"] == row["duplicate_of_part"] == "training"]
    assert len(within) == 1 and {within[0]["path"].rsplit("/", 1)[1], within[0]["duplicate_of"].rsplit("/", 1)[1]} == {
        "again.jpg",
        "p121.jpg",
    }
    # The random validation share never separates copies: both dog copies are on the training side.
    splits = {row["path"].rsplit("/", 1)[1]: row["split"] for row in _rows(tmp_path / "m" / "splits.csv")}
    assert splits["again.jpg"] == splits["p121.jpg"] == "training"
    assert "Decoded and checked 38 files in" in result.stdout  # the one summary line when not on a terminal
    assert "Warning: 3 test image(s) (Test_Set) are copies of training or validation images" in result.stdout
    assert "the test accuracy is overstated" in result.stdout


def test_strict_refuses_leaked_test_photos_in_one_line(leaky_dataset, tmp_path):
    result = run_script(
        "train_cnn.py", "--data-dir", leaky_dataset, "--model-dir", tmp_path / "m", "--arch", "simple",
        "--image-size", "32", "--epochs", "1", "--strict",
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "Test_Set/cats/exact.jpg: a copy of the" in line and "3 Test_Set image(s) in all" in line
    assert "--strict" in line and "Traceback" not in result.stderr
    assert not (tmp_path / "m" / "model.h5").exists()


def test_the_same_grey_picture_in_other_colours_is_not_a_copy(tmp_path):
    grey = np.asarray(photo(11).convert("L"), np.float64)
    tinted = np.stack([grey + 40, grey - 40 * 0.299 / 0.587, grey], axis=-1)  # the same luminance, reddish
    pictures = [np.stack([grey] * 3, axis=-1), tinted, np.stack([grey] * 3, axis=-1)]
    thumbnails = np.stack([duplicates.thumbnail(np.uint8(np.clip(p, 0, 255))) for p in pictures])
    hashes = duplicates.perceptual_hashes(thumbnails)
    assert hashes[0] == hashes[1] == hashes[2]  # the grey hash cannot tell them apart...
    pairs = duplicates.find(thumbnails, [str(tmp_path / name) for name in ("a", "b", "c")])
    assert [(p.first, p.second, p.kind) for p in pairs] == [(0, 2, "near")]  # ...the colour check does
