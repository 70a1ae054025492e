"""Labeling a large folder: rows reach the CSV batch by batch, Ctrl-C keeps them, --resume labels the rest
once, and memory does not grow with the number of files."""

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, _environment, run_script
from PIL import Image

from imgclf import artifacts, models

pytestmark = pytest.mark.slow


def _model(folder, image_size):
    """An untrained classic network saved as train_cnn.py would save it (labels need not be right here)."""
    model = models.build_model("simple", image_size, 2)
    artifacts.save_model(
        model, str(folder), {"class_names": ["cats", "dogs"], "image_size": image_size, "resize": "bilinear"}
    )
    return folder


def _tiny_images(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"img_{i:05d}.png")
    return folder


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def _predict(*args):
    return [sys.executable, str(ROOT / "predict.py"), *map(str, args)]


def test_ctrl_c_keeps_every_labeled_row_and_resume_labels_each_file_once(tmp_path):
    model_dir = _model(tmp_path / "models", 32)
    photos = _tiny_images(tmp_path / "photos", 3000)
    output = tmp_path / "predictions.csv"
    command = _predict("--model-dir", model_dir, "--input", photos, "--output", output, "--batch-size", "1")
    process = subprocess.Popen(  # SIGINT as a terminal leaves it (a background shell would have it ignored)
        command, env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and (not output.exists() or len(output.read_text().splitlines()) < 21):  # 20 rows
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    rows = _rows(output)
    assert 20 <= len(rows) - 1 < 3000, "interrupted before the end"
    assert all(len(row) == 6 and row[1] in ("cats", "dogs") for row in rows[1:])  # whole rows only

    resumed = run_script("predict.py", *command[2:], "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(rows) - 1} file(s) already labeled" in resumed.stdout
    final = _rows(output)
    paths = [row[0] for row in final[1:]]
    assert sorted(paths) == sorted(str(photos / name) for name in os.listdir(photos))  # each file exactly once
    assert final[: len(rows)] == rows  # the earlier rows are kept as they were


def test_resume_after_a_crash_drops_a_half_written_row_and_retries_unreadable_files(tmp_path):
    model_dir = _model(tmp_path / "models", 32)
    photos = _tiny_images(tmp_path / "photos", 40)
    output = tmp_path / "predictions.csv"
    (photos / "late.jpg").write_bytes(b"not yet an image")
    args = ["--model-dir", model_dir, "--input", photos, "--output", output, "--batch-size", "8"]
    first = run_script("predict.py", *args)
    assert first.returncode == 1
    complete = _rows(output)
    text = output.read_text()
    lines = text.splitlines(keepends=True)
    output.write_text("".join(lines[:11]) + lines[11][:9])  # a crash in the middle of a row
    Image.new("RGB", (8, 8)).save(photos / "late.jpg", "JPEG")  # the unreadable file was fixed since
    resumed = run_script("predict.py", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "10 file(s) already labeled" in resumed.stdout and "labeling the other 31" in resumed.stdout
    final = _rows(output)
    assert sorted(row[0] for row in final[1:]) == sorted(row[0] for row in complete[1:])
    assert not [row for row in final[1:] if row[-1]]
    by_path = {row[0]: row for row in final[1:]}
    assert all(by_path[row[0]] == row for row in complete[1:] if not row[-1])  # same labels as the full run

    (tmp_path / "other.csv").write_text("path,label\nx,y\n")
    refused = run_script("predict.py", *args[:-4], "--output", tmp_path / "other.csv", "--resume")
    assert refused.returncode == 2 and "its columns differ" in refused.stderr


def _peak_rss_mb(command):
    process = subprocess.Popen(command, env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, process.stderr.read()
    return usage.ru_maxrss / 1024


def test_memory_does_not_grow_with_the_number_of_files(tmp_path):
    # At 128 px, decoding 4000 files up front would take 4000 * 128 * 128 * 3 bytes = 197 MB (787 MB as float32).
    model_dir = _model(tmp_path / "models", 128)
    few = _tiny_images(tmp_path / "few", 400)
    many = _tiny_images(tmp_path / "many", 4000)
    peaks = [
        _peak_rss_mb(_predict("--model-dir", model_dir, "--input", folder, "--output", tmp_path / "p.csv"))
        for folder in (few, many)
    ]
    assert len(_rows(tmp_path / "p.csv")) == 4001
    assert peaks[1] - peaks[0] < 80, peaks


def test_a_terminal_sees_one_progress_line_instead_of_a_line_per_file(tmp_path):
    import pty

    model_dir = _model(tmp_path / "models", 32)
    photos = _tiny_images(tmp_path / "photos", 120)
    leader, follower = pty.openpty()
    command = _predict("--model-dir", model_dir, "--input", photos, "--output", tmp_path / "p.csv", "--batch-size", "8")
    result = subprocess.run(command, env=_environment(), stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal is closed once everything was read
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert result.returncode == 0
    assert b"120/120 files" in shown and b"files/s" in shown and b"left" in shown, shown[-300:]
    assert "img_00000.png" not in result.stdout and "Labeled 120 of 120 files" in result.stdout
