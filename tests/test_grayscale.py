"""Grayscale images (X-rays, scans): single-channel and mixed folders train and label, whatever mode a file
is stored in; a model trained on grey images labels colour photos in grey."""

import csv
import json

import numpy as np
import pytest
from conftest import class_image, run_script

pytestmark = pytest.mark.slow


def _tree(root, per_class, grey):
    """root/<class>/img_<i>.png; `grey(i)` says whether image i is stored with one channel."""
    for label, name in enumerate(["normal", "pneumonia"]):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = class_image(label, 1000 * label + i)
            (image.convert("L") if grey(i) else image).save(root / name / f"img_{i}.png")


def _probabilities(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["path"].rsplit("/", 1)[-1]: float(row["prob_pneumonia"]) for row in csv.DictReader(handle)}


@pytest.mark.parametrize("arch", ["simple", "efficientnet_lite0"])
def test_a_grayscale_folder_trains_and_colour_photos_are_labeled_in_grey(tmp_path, arch):
    _tree(tmp_path / "Dataset" / "Training_Set", 16, grey=lambda i: True)
    model_dir = tmp_path / "models"
    recipe = ["--recipe", "features"] if arch != "simple" else []  # each recipe on grey pictures: test_recipes.py
    result = run_script("train_cnn.py", "--data-dir", tmp_path / "Dataset", "--model-dir", model_dir, "--arch", arch,
                        "--image-size", "32", "--epochs", "3", "--batch-size", "8", *recipe)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Every training image is grayscale" in result.stdout
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["color_mode"] == "grayscale" and "reduced to grey" in metadata["preprocessing"]
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        colour = class_image(i % 2, 50 + i)
        colour.save(photos / f"colour_{i}.png")
        colour.convert("L").save(photos / f"grey_{i}.png")
    output = tmp_path / "p.csv"
    result = run_script("predict.py", "--model-dir", model_dir, "--input", photos, "--output", output)
    assert result.returncode == 0, result.stderr
    probabilities = _probabilities(output)
    for i in range(4):  # the colour photo is seen exactly as its grey version
        assert probabilities[f"colour_{i}.png"] == probabilities[f"grey_{i}.png"]


def test_mixed_folders_train_in_colour_and_a_grey_file_labels_the_same_in_either_mode(tmp_path):
    _tree(tmp_path / "Dataset" / "Training_Set", 16, grey=lambda i: i % 2 == 0)
    model_dir = tmp_path / "models"
    result = run_script("train_cnn.py", "--data-dir", tmp_path / "Dataset", "--model-dir", model_dir, "--arch",
                        "simple", "--image-size", "32", "--epochs", "2")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((model_dir / "metadata.json").read_text())["color_mode"] == "rgb"
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        grey = class_image(i % 2, 80 + i).convert("L")
        grey.save(photos / f"one_channel_{i}.png")
        grey.convert("RGB").save(photos / f"three_channels_{i}.png")
        assert np.asarray(grey.convert("RGB")).shape[-1] == 3
    output = tmp_path / "p.csv"
    assert run_script("predict.py", "--model-dir", model_dir, "--input", photos, "--output", output).returncode == 0
    probabilities = _probabilities(output)
    for i in range(4):
        assert probabilities[f"one_channel_{i}.png"] == probabilities[f"three_channels_{i}.png"]
