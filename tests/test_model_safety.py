"""Model files from elsewhere: code in them never runs, changed or mismatched files are refused."""

import json

import h5py
import keras
import numpy as np
import pytest
from PIL import Image

from imgclf import artifacts, loading, models
from imgclf.cli import UsageError


def _lambda_model(sentinel):
    path = str(sentinel)

    def touch(x):
        with open(path, "w") as handle:
            handle.write("code from the model file ran")
        return x

    inputs = keras.Input((4,))
    # A plain lambda is stored as Python bytecode; a named function by name. Test both.
    hidden = keras.layers.Lambda(lambda x: (open(path, "w").write("ran"), x)[1])(inputs)
    outputs = keras.layers.Lambda(touch)(hidden)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_lambda_layers_are_refused_and_never_run(tmp_path, suffix):
    sentinel = tmp_path / "sentinel"
    model = _lambda_model(sentinel)
    model.save(tmp_path / f"evil{suffix}")
    sentinel.unlink(missing_ok=True)  # Building the model may have called it; loading must not.
    with pytest.raises(UsageError, match=r"refused: it contains code that would run when loaded \(Lambda layer"):
        artifacts.load_model(str(tmp_path / f"evil{suffix}"))
    assert not sentinel.exists()


def test_classes_from_other_modules_are_refused(tmp_path):
    model = models.build_model("simple", 32, 2)
    path = tmp_path / "model.h5"
    artifacts.save_model(model, str(tmp_path), {})
    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        config["config"]["layers"][2]["module"] = "os"
        config["config"]["layers"][2]["class_name"] = "system"
        handle.attrs["model_config"] = json.dumps(config)
    with pytest.raises(UsageError, match=r"system from module 'os'"):
        artifacts.load_model(str(path))


def test_changed_model_file_fails_the_checksum(tmp_path):
    model = models.build_model("simple", 32, 2)
    artifacts.save_model(model, str(tmp_path), {"class_names": ["a", "b"], "image_size": 32})
    metadata = artifacts.read_metadata(str(tmp_path / "model.h5"))
    artifacts.check_checksum(str(tmp_path / "model.h5"), metadata)  # Untouched: accepted.
    with open(tmp_path / "model.h5", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(UsageError, match=r"modified since training .*--ignore-checksum"):
        artifacts.check_checksum(str(tmp_path / "model.h5"), metadata)


@pytest.mark.parametrize("metadata", [{"class_names": ["a", "b"], "image_size": 64},
                                      {"class_names": ["a", "b", "c"], "image_size": 32}])  # fmt: skip
def test_model_disagreeing_with_metadata_is_refused(metadata):
    model = models.build_model("simple", 32, 2)
    with pytest.raises(UsageError, match=r"but metadata\.json says"):
        artifacts.check_matches_metadata(model, "model.h5", metadata)
    artifacts.check_matches_metadata(model, "model.h5", {"class_names": ["a", "b"], "image_size": 32})


def test_truncated_model_file_is_one_clear_error(tmp_path):
    artifacts.save_model(models.build_model("simple", 32, 2), str(tmp_path), {})
    path = tmp_path / "model.h5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(UsageError, match=r"model\.h5: not a valid model file"):
        artifacts.load_model(str(path))


def test_bit_flipped_model_file_is_caught(tmp_path):
    """A flip inside the weights can still load; the checksum is what catches it."""
    artifacts.save_model(models.build_model("simple", 32, 2), str(tmp_path), {})
    path = tmp_path / "model.h5"
    metadata = artifacts.read_metadata(str(path))
    content = bytearray(path.read_bytes())
    for index in np.random.default_rng(0).integers(0, len(content), 50):
        content[index] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(UsageError, match=r"modified since training"):
        artifacts.check_checksum(str(path), metadata)


@pytest.mark.parametrize("name", ["photo.jpg", "saved_model.pb", "model.weights.h5"])
def test_a_file_that_is_not_a_model_is_one_line_naming_the_model_files(tmp_path, name):
    import config

    path = tmp_path / name
    if name.endswith(".h5"):  # weights alone: an HDF5 file with no architecture in it
        models.build_model("simple", 32, 2).save_weights(path)
    else:
        Image.new("RGB", (8, 8)).save(tmp_path / "photo.jpg")
        path.write_bytes((tmp_path / "photo.jpg").read_bytes())
    with pytest.raises(UsageError) as caught:
        loading.load_for_prediction(config.PredictConfig(model=str(path)))
    message = str(caught.value)
    assert message.startswith(f"{path}: not a valid model file") and "\n" not in message
    assert "--classes" not in message and "model.onnx or .tflite" in message


def test_too_few_class_names_says_how_many_in_good_grammar():
    model = models.build_model("simple", 32, 2)
    with pytest.raises(UsageError, match=r"--classes: the model has 2 classes, 1 name was given\. Name each class"):
        artifacts.metadata_for(model, ["cats"], "old.h5")


def test_a_changed_model_file_beside_its_metadata_says_modified_not_invalid(tmp_path):
    import config

    artifacts.save_model(models.build_model("simple", 32, 2), str(tmp_path), {"class_names": ["a", "b"],
                                                                             "image_size": 32})  # fmt: skip
    path = tmp_path / "model.h5"
    path.write_bytes(path.read_bytes()[:1000])  # damaged after training
    with pytest.raises(UsageError, match=r"modified since training"):
        loading.load_for_prediction(config.PredictConfig(model=str(path)))
