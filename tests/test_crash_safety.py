"""An interrupted or failing save never leaves a broken file where a good one was."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT

from imgclf import artifacts, models

SAVE_LOOP = """
import sys
sys.path.insert(0, {root!r})
from imgclf import artifacts, models
model = models.build_model("compact", 64, 2)
print("ready", flush=True)
while True:
    artifacts.save_model(model, {folder!r}, {{"class_names": ["a", "b"], "image_size": 64}})
    artifacts.write_text({csv!r}, "path,label\\n" * 50000)
"""


def _assert_intact(folder):
    metadata = json.loads((folder / "metadata.json").read_text())
    for name in ("model.h5", "model.weights.h5"):
        assert metadata["sha256"][name] == artifacts.sha256(folder / name)
    model = artifacts.load_model(str(folder / "model.h5"))
    assert np.all(np.isfinite(np.asarray(model(np.zeros((1, 64, 64, 3), np.float32)))))
    assert (folder / "predictions.csv").read_text().count("\n") == 50000


@pytest.mark.slow
def test_kill_9_during_saves_leaves_the_previous_files_intact(tmp_path):
    artifacts.save_model(models.build_model("compact", 64, 2), str(tmp_path), {"class_names": ["a", "b"]})
    artifacts.write_text(str(tmp_path / "predictions.csv"), "path,label\n" * 50000)
    code = SAVE_LOOP.format(root=str(ROOT), folder=str(tmp_path), csv=str(tmp_path / "predictions.csv"))
    for delay in (0.3, 0.9, 1.7):
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
        time.sleep(delay)  # Somewhere inside a save: the loop does nothing else.
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        _assert_intact(tmp_path)


def test_disk_full_during_save_keeps_the_old_model(tmp_path, monkeypatch):
    good = models.build_model("simple", 32, 2)
    artifacts.save_model(good, str(tmp_path), {"class_names": ["a", "b"]})
    before = {name: (tmp_path / name).read_bytes() for name in ("model.h5", "model.weights.h5", "metadata.json")}
    other = models.build_model("simple", 32, 2)

    def full_disk(path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"\x89HDF half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(other, "save_weights", full_disk)
    with pytest.raises(OSError, match="No space left"):
        artifacts.save_model(other, str(tmp_path), {"class_names": ["a", "b"]})
    for name, content in before.items():
        assert (tmp_path / name).read_bytes() == content, name
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")]


def test_disk_full_while_writing_predictions_keeps_the_old_csv(tmp_path, monkeypatch):
    target = tmp_path / "predictions.csv"
    target.write_text("path,label\nold.jpg,cats\n")
    real_open = open

    class FullFile:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, text):
            self.handle.write(text[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

    def opener(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return FullFile(handle) if "w" in mode and ".tmp-" in str(path) else handle

    monkeypatch.setattr("builtins.open", opener)
    with pytest.raises(OSError, match="No space left"):
        artifacts.write_text(str(target), "path,label\nnew.jpg,dogs\n")
    monkeypatch.undo()
    assert target.read_text() == "path,label\nold.jpg,cats\n"
    assert os.listdir(tmp_path) == ["predictions.csv"]
