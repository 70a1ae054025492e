"""Each training error is raised before any image is decoded, with its message pinned."""

import dataclasses
import json

import pytest
from conftest import run_script, write_class_tree

import config
from imgclf import training
from imgclf.cli import UsageError


def _config(tmp_path, **changes):
    return dataclasses.replace(
        config.TrainConfig(), data_dir=str(tmp_path / "Dataset"), model_dir=str(tmp_path / "models"), **changes
    )


def test_missing_training_set(tmp_path):
    with pytest.raises(UsageError, match=r"Dataset/Training_Set: folder not found\. Pass --data-dir .*`make demo`"):
        training.train(_config(tmp_path))


@pytest.mark.slow
def test_run_from_another_folder_names_the_absolute_path_and_data_dir(tmp_path):
    result = run_script("train_cnn.py", cwd=tmp_path)
    (line,) = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert line.startswith(f"error: {tmp_path}/Dataset/Training_Set: folder not found. Pass --data-dir"), line


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "mobilenet_v3_small"])
def test_missing_backbone_weights_file_is_one_line_and_leaves_nothing(tmp_path, arch):
    write_class_tree(tmp_path / "Dataset" / "Training_Set", ["cats", "dogs"], per_class=2)
    result = run_script(
        "train_cnn.py", "--data-dir", tmp_path / "Dataset", "--model-dir", tmp_path / "m", "--arch", arch,
        "--backbone-weights", tmp_path / "nowhere.pth",
    )  # fmt: skip
    (line,) = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "nowhere.pth: file not found" in line and "--backbone-weights" in line
    assert not (tmp_path / "m").exists()


def test_backbone_weights_for_a_network_trained_from_scratch(tmp_path):
    (tmp_path / "w.h5").write_bytes(b"weights")
    with pytest.raises(UsageError, match=r"--backbone-weights: --arch compact is trained from scratch"):
        training.resolve_config(_config(tmp_path, arch="compact", backbone_weights=str(tmp_path / "w.h5")))


def _earlier_model_folder(tmp_path, architecture="compact", image_size=96):
    folder = tmp_path / "earlier"
    folder.mkdir()
    (folder / "model.h5").write_bytes(b"")  # Only its metadata.json is read to resolve the settings.
    (folder / "metadata.json").write_text(json.dumps({"architecture": architecture, "image_size": image_size}))
    return str(folder)


@pytest.mark.parametrize(
    "changes, flag",
    [
        ({"arch": "simple"}, "--arch simple"),
        ({"image_size": 64}, "--image-size 64"),
        ({"arch": "compact", "image_size": 64}, "--image-size 64"),
        ({"backbone_weights": "w.h5"}, "--backbone-weights .*w.h5"),
    ],
)
def test_init_from_refuses_another_architecture_or_size_alike(tmp_path, monkeypatch, changes, flag):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.h5").write_bytes(b"weights")
    earlier = _earlier_model_folder(tmp_path)
    with pytest.raises(UsageError, match=rf"^{flag}: --init-from .*earlier continues its compact network at 96 px"):
        training.resolve_config(_config(tmp_path, init_from=earlier, **changes))


def test_init_from_keeps_its_architecture_and_accepts_the_same_flags(tmp_path):
    earlier = _earlier_model_folder(tmp_path)
    for changes in ({}, {"arch": "compact"}, {"image_size": 96}):
        resolved = training.resolve_config(_config(tmp_path, init_from=earlier, **changes))
        assert (resolved.arch, resolved.image_size) == ("compact", 96)


def test_single_class(tmp_path):
    write_class_tree(tmp_path / "Dataset" / "Training_Set", ["cats"], per_class=2)
    with pytest.raises(UsageError, match=r"needs at least two class sub-folders .*found only 'cats'"):
        training.train(_config(tmp_path))


def test_test_set_classes_must_match(tmp_path):
    write_class_tree(tmp_path / "Dataset" / "Training_Set", ["cats", "dogs"], per_class=2)
    write_class_tree(tmp_path / "Dataset" / "Test_Set", ["cats", "wolves"], per_class=2)
    with pytest.raises(UsageError, match=r"Test_Set: its class folders \['cats', 'wolves'\] differ from the training"):
        training.train(_config(tmp_path))


def test_unwritable_model_dir_is_caught_before_training(tmp_path):
    write_class_tree(tmp_path / "Dataset" / "Training_Set", ["cats", "dogs"], per_class=2)
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(UsageError, match=r"--model-dir .*taken: cannot write there"):
        training.train(dataclasses.replace(_config(tmp_path), model_dir=str(tmp_path / "taken")))


def test_unknown_architecture(tmp_path):
    with pytest.raises(
        UsageError, match=r"`--arch` must be one of efficientnet_lite0, .*, compact, simple\. Received: resnet9000"
    ):
        training.train(_config(tmp_path, arch="resnet9000"))


def test_class_with_no_readable_image(tmp_path):
    write_class_tree(tmp_path / "Dataset" / "Training_Set", ["cats"], per_class=4)
    dogs = tmp_path / "Dataset" / "Training_Set" / "dogs"
    dogs.mkdir()
    for i in range(4):
        (dogs / f"{i}.jpg").write_bytes(b"garbage")
    with pytest.raises(UsageError, match=r"Training images of class 'dogs': none could be read"):
        training.train(_config(tmp_path, image_size=32))


def test_image_size_below_sixteen(tmp_path):
    with pytest.raises(UsageError, match=r"`--image-size` must be between 16 and 1024\. Received: 8"):
        training.train(_config(tmp_path, image_size=8))


@pytest.mark.parametrize("arch, size", [("simple", 64), ("compact", 96)])
def test_no_image_size_means_the_architectures_own(tmp_path, arch, size):
    assert training.resolve_config(_config(tmp_path, arch=arch)).image_size == size
    assert training.resolve_config(_config(tmp_path, arch=arch, image_size=40)).image_size == 40


def test_strict_refuses_unreadable_files_and_lists_them(tmp_path, capsys):
    write_class_tree(tmp_path / "Dataset" / "Training_Set", ["cats", "dogs"], per_class=3)
    (tmp_path / "Dataset" / "Training_Set" / "dogs" / "empty.jpg").write_bytes(b"")
    (tmp_path / "Dataset" / "Training_Set" / "cats" / "text.jpg").write_text("not a picture")
    with pytest.raises(UsageError, match=r"/(empty|text)\.jpg: .*\(2 unreadable file\(s\) in all\)\. Fix or remove"):
        training.train(_config(tmp_path, image_size=32, strict=True))
    listed = capsys.readouterr().out
    assert "empty.jpg: " in listed and "text.jpg: " in listed
    assert not (tmp_path / "models").exists()  # Nothing left behind that could be taken for a model's report.


def test_a_failed_run_leaves_no_empty_model_folder(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example/x.h5: None -- [Errno -3] name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    write_class_tree(tmp_path / "Dataset" / "Training_Set", ["cats", "dogs"], per_class=4)
    with pytest.raises(UsageError, match=r"--arch mobilenet_v3_small: its ImageNet weights could not be downloaded"):
        training.train(_config(tmp_path, arch="mobilenet_v3_small", image_size=32))
    assert not (tmp_path / "models").exists()


def test_init_from_a_folder_without_a_model(tmp_path):
    write_class_tree(tmp_path / "Dataset" / "Training_Set", ["cats", "dogs"], per_class=2)
    with pytest.raises(UsageError, match=r"--init-from .*nowhere: no model.h5 there\. Give a model folder\."):
        training.train(_config(tmp_path, init_from=str(tmp_path / "nowhere")))
