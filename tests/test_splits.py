"""Which images train, which choose (best epoch, threshold) and which score: a Test_Set never chooses."""

import csv
import json

import numpy as np
import pytest
from conftest import run_script, write_class_tree

import config
from imgclf import splits


def _scan(data_dir, **settings):
    return splits.scan(config.TrainConfig(data_dir=str(data_dir), **settings))


def _from(split, indices, folder):
    return all(f"/{folder}/" in split.paths[i] for i in indices)


def test_validation_set_and_test_set_folders_are_used_as_they_are(tmp_path):
    write_class_tree(tmp_path / "Training_Set", ["a", "b"], per_class=10)
    write_class_tree(tmp_path / "Validation_Set", ["a", "b"], per_class=3, start_seed=100)
    write_class_tree(tmp_path / "Test_Set", ["a", "b"], per_class=4, start_seed=200)
    split = _scan(tmp_path)
    assert len(split.train) == 20 and _from(split, split.train, "Training_Set")
    assert len(split.validation) == 6 and _from(split, split.validation, "Validation_Set")
    assert len(split.test) == 8 and _from(split, split.test, "Test_Set")
    assert (split.validation_source, split.test_source) == ("Validation_Set", "Test_Set")


def test_with_a_test_set_validation_is_a_stratified_share_of_training_set(tmp_path):
    write_class_tree(tmp_path / "Training_Set", ["a", "b"], per_class=20)
    write_class_tree(tmp_path / "Test_Set", ["a", "b"], per_class=4, start_seed=200)
    split = _scan(tmp_path, validation_split=0.25)
    assert _from(split, split.validation, "Training_Set") and _from(split, split.test, "Test_Set")
    assert np.bincount(split.labels[split.validation]).tolist() == [5, 5]
    assert not set(split.train) & set(split.validation)
    assert split.validation_source == "0.25 of Training_Set"


def test_test_split_holds_out_a_seeded_stratified_share(tmp_path):
    write_class_tree(tmp_path / "Training_Set", ["a", "b", "c"], per_class=20)
    split = _scan(tmp_path, test_split=0.2, validation_split=0.25)
    parts = [set(split.train), set(split.validation), set(split.test)]
    assert sum(len(part) for part in parts) == 60 and len(set.union(*parts)) == 60  # each image in one part
    assert np.bincount(split.labels[split.test]).tolist() == [4, 4, 4]
    assert np.bincount(split.labels[split.validation]).tolist() == [4, 4, 4]  # 0.25 of the 16 left per class
    assert split.test_source == "0.2 of Training_Set"
    assert "after the test share" in split.validation_source
    again = _scan(tmp_path, test_split=0.2, validation_split=0.25)
    assert again.test.tolist() == split.test.tolist()
    other = _scan(tmp_path, test_split=0.2, validation_split=0.25, seed=7)
    assert other.test.tolist() != split.test.tolist()
    assert len(_scan(tmp_path).test) == 0  # no test share unless asked


@pytest.mark.slow
def test_a_test_set_is_scored_but_never_chooses(tmp_path):
    # The Test_Set's folders are swapped: if it chose the best epoch or the threshold, the choice would
    # follow the wrong labels; scored honestly, the model gets it (almost) all "wrong".
    data_dir = tmp_path / "Dataset"
    write_class_tree(data_dir / "Training_Set", ["cats", "dogs"], per_class=30)
    write_class_tree(data_dir / "Test_Set", ["dogs", "cats"], per_class=10, start_seed=500)
    model_dir = tmp_path / "models"
    result = run_script("train_cnn.py", "--data-dir", data_dir, "--model-dir", model_dir, "--arch", "simple",
                        "--image-size", "32", "--epochs", "6", "--batch-size", "8")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["validation"]["accuracy"] >= 0.8 and metadata["test"]["accuracy"] <= 0.2
    assert 0.01 < metadata["threshold"] < 0.99
    with open(model_dir / "splits.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 80
    assert {row["split"] for row in rows if "/Test_Set/" in row["path"]} == {"test"}
    assert {row["split"] for row in rows if "/Training_Set/" in row["path"]} == {"training", "validation"}
    assert sum(row["split"] == "validation" for row in rows) == 12
