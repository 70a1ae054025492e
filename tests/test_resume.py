"""Ctrl-C during training, then --resume: same final epoch count, nothing better forgotten."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import ROOT, write_class_tree

from imgclf import fitting, training


def _start(args):
    """Starts a training in the background as a terminal would: a shell that starts jobs in the background
    (as CI may) leaves SIGINT ignored in them, and that is inherited; restored here, Ctrl-C reaches Python."""
    return subprocess.Popen(
        [str(arg) for arg in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def _wait_for_epochs(model_dir, epochs, seconds=120, recipe="scratch"):
    """Waits until `recipe`'s run in `model_dir` has logged `epochs` complete epochs; returns its partial history."""
    partial = model_dir / "checkpoints" / recipe / "history.csv"
    deadline = time.time() + seconds
    while time.time() < deadline and not (partial.exists() and len(partial.read_text().splitlines()) > epochs):
        time.sleep(0.2)
    return partial


@pytest.mark.slow
def test_ctrl_c_then_resume_finishes_the_same_run(tmp_path):
    data_dir, model_dir = tmp_path / "Dataset", tmp_path / "models"
    write_class_tree(data_dir / "Training_Set", ["cats", "dogs"], per_class=40)
    args = [
        sys.executable,
        str(ROOT / "train_cnn.py"),
        "--data-dir",
        str(data_dir),
        "--model-dir",
        str(model_dir),
        "--epochs",
        "40",
        "--patience",
        "100",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--arch",
        "compact",
    ]  # fmt: skip  (40 epochs: Ctrl-C lands long before the end, however fast the CPU)
    process = _start(args)
    partial = _wait_for_epochs(model_dir, 2)
    process.send_signal(signal.SIGINT)  # What Ctrl-C sends.
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "python train_cnn.py --resume --model-dir" in stderr and "Traceback" not in stderr
    assert not (model_dir / "model.h5").exists()
    done_before = len(partial.read_text().splitlines()) - 1
    assert 2 <= done_before < 40

    result = subprocess.run([*args[:2], "--resume", "--model-dir", str(model_dir)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Resuming the interrupted run" in result.stdout
    assert "Warning" not in result.stderr and "Skipping variable loading" not in result.stderr, result.stderr
    history = fitting.read_history(model_dir / "history.csv")
    assert history["epoch"] == list(range(40))  # Continued, not restarted, and to the same final count.
    assert history["seconds"] == sorted(history["seconds"])
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["training"]["epochs_run"] == 40
    assert not (model_dir / "checkpoints").exists()


def test_resume_without_an_interrupted_run_is_refused(tmp_path):
    import config

    settings = config.TrainConfig(data_dir=str(tmp_path), model_dir=str(tmp_path / "m"), resume=True)
    with pytest.raises(training.UsageError, match=r"--resume: no interrupted run in .* Run without --resume"):
        training.train(settings)


def test_resumed_early_stopping_keeps_the_earlier_best_weights(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    best = [np.full((3, 1), 0.123, np.float32), np.full((1,), 0.5, np.float32)]
    model.set_weights(best)
    model.save_weights(tmp_path / "best.weights.h5")
    model.set_weights([np.zeros((3, 1), np.float32), np.zeros((1,), np.float32)])
    x, y = np.random.default_rng(0).normal(size=(32, 3)), np.random.default_rng(1).integers(0, 2, (32, 1))
    # The interrupted run had reached val_loss 0.01: nothing now can beat it.
    earlier = {"val_loss": [0.3, 0.01, 0.2], "seconds": [1.0, 2.0, 3.0]}
    stopper = fitting.ResumableEarlyStopping(earlier, str(tmp_path / "best.weights.h5"), patience=5)
    model.fit(x, y, validation_data=(x, y), epochs=2, callbacks=[stopper], verbose=0)
    for restored, expected in zip(model.get_weights(), best):
        np.testing.assert_allclose(restored, expected)
    assert stopper.best == 0.01


def test_a_failing_fresh_run_keeps_an_interrupted_runs_state(tmp_path):
    import config

    backup = tmp_path / "m" / "checkpoints" / "fine-tune" / "backup"
    backup.mkdir(parents=True)
    (backup / "latest.weights.h5").write_bytes(b"state of epoch 7")
    settings = config.TrainConfig(data_dir=str(tmp_path / "typo"), model_dir=str(tmp_path / "m"))
    with pytest.raises(training.UsageError, match="Training_Set: folder not found"):
        training.train(settings)
    assert (backup / "latest.weights.h5").read_bytes() == b"state of epoch 7"


def _folder_contents(folder):
    """{relative path: bytes} of every file in `folder`, but an interrupted run's state (checkpoints/) and the
    writer lock."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).parts[0] not in ("checkpoints", ".writer.lock")
    }


@pytest.mark.slow
def test_ctrl_c_of_another_run_leaves_the_model_folder_describing_its_model(tmp_path):
    first, second, model_dir = tmp_path / "first", tmp_path / "second", tmp_path / "models"
    write_class_tree(first / "Training_Set", ["cats", "dogs"], per_class=12)
    write_class_tree(second / "Training_Set", ["ants", "bees", "wasps"], per_class=30, start_seed=50)
    (second / "Training_Set" / "bees" / "broken.jpg").write_bytes(b"not a picture")  # skipped_files.txt differs
    common = [sys.executable, str(ROOT / "train_cnn.py"), "--model-dir", str(model_dir), "--image-size", "32"]
    done = subprocess.run([*common, "--data-dir", first, "--arch", "simple", "--epochs", "1"], capture_output=True)
    assert done.returncode == 0, done.stderr
    before = _folder_contents(model_dir)
    assert {"splits.csv", "summary.txt", "skipped_files.txt", "duplicates.csv", "metadata.json"} <= set(before)
    assert any(name.startswith("logs/") for name in before)

    process = _start([*common, "--data-dir", second, "--arch", "compact", "--epochs", "40", "--patience", "100"])
    _wait_for_epochs(model_dir, 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted: nothing was overwritten")
    assert _folder_contents(model_dir) == before  # Every report still describes the first model.

    resumed = subprocess.run([*common, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    after = _folder_contents(model_dir)
    assert "ants" in after["splits.csv"].decode() and "broken.jpg" in after["skipped_files.txt"].decode()
    assert "cats" not in after["splits.csv"].decode() and after["summary.txt"] != before["summary.txt"]
    assert not (model_dir / "checkpoints").exists()


def test_commit_moves_a_runs_files_and_removes_an_earlier_models_reports(tmp_path):
    from imgclf import artifacts, export

    staging, model_dir = tmp_path / "m" / "checkpoints" / "staged", tmp_path / "m"
    (staging / "logs").mkdir(parents=True)
    for name, text in (("report.txt", "new"), ("logs/events", "new")):
        (staging / name).write_text(text)
    for name in ("report.txt", "report.html", "logs/old-events", "notes.txt", "model.onnx", "saved_model/x.pb"):
        (model_dir / name).parent.mkdir(exist_ok=True)
        (model_dir / name).write_text("old")
    names = [*training.REPORT_FILES, *export.FILES.values()]  # what training passes
    artifacts.commit(str(staging), str(model_dir), names)
    assert (model_dir / "report.txt").read_text() == "new" and (model_dir / "logs" / "events").read_text() == "new"
    assert not (model_dir / "report.html").exists() and not (model_dir / "logs" / "old-events").exists()
    assert not (model_dir / "model.onnx").exists() and not (model_dir / "saved_model").exists()  # the old exports
    assert (model_dir / "notes.txt").read_text() == "old"  # Not a report: the user's own file stays.
    assert os.listdir(staging) == []


def test_ctrl_c_during_the_commit_waits_for_it_and_says_the_model_was_saved(tmp_path, monkeypatch):
    from imgclf import artifacts

    staging, model_dir = tmp_path / "m" / "checkpoints" / "staged", tmp_path / "m"
    staging.mkdir(parents=True)
    for name in ("model.h5", "metadata.json", "report.txt", ".tmp-123-report.html"):
        (staging / name).write_text("new")
    (model_dir / "metadata.json").write_text("old")
    moved, replace = [], os.replace

    def replace_then_ctrl_c(source, destination):
        if not moved:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the renames
        moved.append(os.path.basename(destination))
        replace(source, destination)

    monkeypatch.setattr(os, "replace", replace_then_ctrl_c)
    # Python's own Ctrl-C handler, also when the tests were started in the background (SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt, match=r"the new model and its reports were saved in .*m all the same"):
        artifacts.commit(str(staging), str(model_dir), ["report.txt"])
    signal.signal(signal.SIGINT, previous)
    assert moved == ["report.txt", "model.h5", "metadata.json"]  # all of them, metadata.json last
    assert all((model_dir / name).read_text() == "new" for name in moved)
    assert not (model_dir / ".tmp-123-report.html").exists()  # a killed write's leftover is not committed


@pytest.mark.slow
def test_one_writer_per_model_folder_and_a_killed_writer_is_taken_over(tmp_path):
    data_dir, model_dir = tmp_path / "Dataset", tmp_path / "models"
    write_class_tree(data_dir / "Training_Set", ["cats", "dogs"], per_class=12)
    command = [sys.executable, str(ROOT / "train_cnn.py"), "--data-dir", str(data_dir), "--model-dir",
               str(model_dir), "--arch", "compact", "--image-size", "32", "--patience", "100"]  # fmt: skip
    first = _start([*command, "--epochs", "200"])
    _wait_for_epochs(model_dir, 1)
    second = subprocess.run([*command, "--epochs", "1"], capture_output=True, text=True)
    assert second.returncode == 2
    (line,) = second.stderr.strip().splitlines()
    assert f"process {first.pid} (train_cnn.py, since " in line and "is writing there now" in line, line
    export = subprocess.run([sys.executable, str(ROOT / "predict.py"), "--model-dir", str(model_dir), "--export",
                             "onnx"], capture_output=True, text=True)  # fmt: skip
    assert export.returncode == 2 and "is writing there now" in export.stderr

    first.kill()  # kill -9: no chance to say it is done
    first.wait(timeout=30)
    third = subprocess.run([*command, "--epochs", "1"], capture_output=True, text=True)
    assert third.returncode == 0, third.stderr
    assert f"was left by process {first.pid} (train_cnn.py" in third.stdout and "taking it over" in third.stdout
    fourth = subprocess.run([*command, "--epochs", "1"], capture_output=True, text=True)
    assert fourth.returncode == 0 and "taking it over" not in fourth.stdout  # the third one finished properly
