import json
import os

import numpy as np
import pytest

from imgclf import artifacts, models
from imgclf.cli import UsageError


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("old")
    with artifacts.atomic_path(target) as temporary:
        assert temporary.endswith("file.txt") and temporary != str(target)
        with open(temporary, "w") as handle:
            handle.write("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["file.txt"]


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "model.h5"
    target.write_text("good model")
    with pytest.raises(RuntimeError), artifacts.atomic_path(target) as temporary:
        with open(temporary, "w") as handle:
            handle.write("half a mod")
        raise RuntimeError("interrupted")
    assert target.read_text() == "good model"
    assert os.listdir(tmp_path) == ["model.h5"]


def test_saved_model_reloads_with_identical_outputs_and_hashes(tmp_path):
    model = models.build_model("compact", 32, 3)
    artifacts.save_model(model, str(tmp_path), {"class_names": ["a", "b", "c"], "image_size": 32})
    assert sorted(os.listdir(tmp_path)) == ["metadata.json", "model.h5", "model.weights.h5"]
    metadata = artifacts.read_metadata(str(tmp_path / "model.h5"))
    assert metadata["class_names"] == ["a", "b", "c"]
    for name in ("model.h5", "model.weights.h5"):
        assert metadata["sha256"][name] == artifacts.sha256(tmp_path / name)
    batch = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    reloaded = artifacts.load_model(str(tmp_path / "model.h5"))
    np.testing.assert_allclose(np.asarray(reloaded(batch)), np.asarray(model(batch)), rtol=1e-5, atol=1e-6)
    rebuilt = models.build_model("compact", 32, 3)
    rebuilt.load_weights(str(tmp_path / "model.weights.h5"))
    np.testing.assert_allclose(np.asarray(rebuilt(batch)), np.asarray(model(batch)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("content", [b"", b"definitely not hdf5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 100])
def test_invalid_model_file_message(tmp_path, content):
    path = tmp_path / "model.h5"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=r"model\.h5: not a valid model file \("):
        artifacts.load_model(str(path))


def test_missing_metadata_message(tmp_path):
    with pytest.raises(UsageError, match=r"metadata\.json: not found\. Train with train_cnn\.py"):
        artifacts.read_metadata(str(tmp_path / "model.h5"))


def test_damaged_metadata_message(tmp_path):
    (tmp_path / "metadata.json").write_text("{half")
    with pytest.raises(UsageError, match=r"metadata\.json: unreadable"):
        artifacts.read_metadata(str(tmp_path / "model.h5"))


def test_metadata_is_valid_json_after_save(tmp_path):
    artifacts.write_text(str(tmp_path / "x.json"), json.dumps({"a": 1}))
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
