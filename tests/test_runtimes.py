"""The runtimes predict.py and training's first pass run on: ONNX Runtime by default on CPUs, LiteRT, Keras; the
export a model folder carries for them, written by training, on first use, or again when damaged."""

import csv
import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
from conftest import ROOT, class_image, run_script, write_class_tree

from imgclf import artifacts, evaluation, models, recipes, runtimes, tta

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small network trained on synthetic stripes (training writes its model.onnx); Predict holds a broken file."""
    root = tmp_path_factory.mktemp("runtimes")
    data_dir = root / "Dataset"
    write_class_tree(data_dir / "Training_Set", ["cats", "dogs"], per_class=16)
    predict_dir = data_dir / "Predict"
    predict_dir.mkdir()
    for i in range(10):
        class_image(i % 2, 900 + i).save(predict_dir / f"photo_{i}.png")
    (predict_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    model_dir = root / "models"
    result = run_script(
        "train_cnn.py", "--data-dir", data_dir, "--model-dir", model_dir, "--arch", "simple", "--image-size", "32",
        "--epochs", "3", "--batch-size", "8",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return root, model_dir


def _label(root, model_dir, *args, output="predictions.csv", env=None):
    command = [sys.executable, str(ROOT / "predict.py"), "--model-dir", model_dir, "--input",
               root / "Dataset" / "Predict", "--output", root / output, *args]  # fmt: skip
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    result = subprocess.run(list(map(str, command)), env=environment, capture_output=True, text=True, timeout=300)
    rows = []
    if os.path.exists(root / output):
        with open(root / output, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    return result, rows


@pytest.fixture(scope="module")
def keras_rows(trained):
    root, model_dir = trained
    result, rows = _label(root, model_dir, "--runtime", "keras", output="keras.csv")
    assert result.returncode == 1, result.stderr  # the broken file
    assert result.stdout.startswith("Runtime: keras (--runtime keras).")
    return rows


def _assert_same_rows(rows, keras_rows, tolerance=1e-3):
    assert [row["path"] for row in rows] == [row["path"] for row in keras_rows]
    for row, expected in zip(rows, keras_rows):
        assert row["label"] == expected["label"] and row["error"] == expected["error"]
        for column in ("prob_cats", "prob_dogs"):
            if expected[column]:
                assert abs(float(row[column]) - float(expected[column])) <= tolerance


def _without_exports(model_dir, target):
    """A copy of `model_dir` as a model trained before training wrote model.onnx: no export, none listed."""
    shutil.copytree(model_dir, target)
    os.remove(target / "model.onnx")
    metadata = json.loads((target / "metadata.json").read_text())
    metadata.pop("exports")
    (target / "metadata.json").write_text(json.dumps(metadata))
    return target


def test_training_writes_model_onnx_and_predict_labels_with_it_as_keras_does(trained, keras_rows):
    root, model_dir = trained
    entry = json.loads((model_dir / "metadata.json").read_text())["exports"]["onnx"]
    assert entry["file"] == "model.onnx" and entry["sha256"] == artifacts.sha256(model_dir / "model.onnx")
    result, rows = _label(root, model_dir)
    assert result.returncode == 1, result.stderr  # the same exit status: one file could not be read
    assert result.stdout.splitlines()[0].startswith("Runtime: onnx (the fastest float runtime on CPUs, same labels")
    _assert_same_rows(rows, keras_rows)
    assert [row["path"].endswith("broken.jpg") for row in rows if row["error"]] == [True]


def test_litert_labels_as_keras_does_from_a_file_written_on_first_use(trained, keras_rows, tmp_path):
    root, model_dir = trained
    copy = shutil.copytree(model_dir, tmp_path / "models")
    result, rows = _label(root, copy, "--runtime", "litert", output="litert.csv")
    assert result.returncode == 1, result.stderr
    assert f"{copy / 'model.tflite'}: not written yet; writing it from model.h5, once..." in result.stdout
    assert "Runtime: litert (--runtime litert)" in result.stdout
    _assert_same_rows(rows, keras_rows)
    assert json.loads((copy / "metadata.json").read_text())["exports"]["litert"]["sha256"] == artifacts.sha256(
        copy / "model.tflite"
    )


def test_a_folder_without_its_export_gets_it_once_and_a_damaged_one_is_written_again(trained, keras_rows, tmp_path):
    root, model_dir = trained
    folder = _without_exports(model_dir, tmp_path / "models")
    first, rows = _label(root, folder, output="first.csv")
    assert f"{folder / 'model.onnx'}: not written yet; writing it from model.h5, once..." in first.stdout
    _assert_same_rows(rows, keras_rows)
    entry = json.loads((folder / "metadata.json").read_text())["exports"]["onnx"]
    assert entry["sha256"] == artifacts.sha256(folder / "model.onnx")
    assert not [name for name in os.listdir(folder) if name.startswith(".tmp-")]  # written whole, then renamed
    again, _ = _label(root, folder, output="again.csv")
    assert "writing it" not in again.stdout and "Runtime: onnx" in again.stdout
    damaged = bytearray((folder / "model.onnx").read_bytes())
    damaged[len(damaged) // 2 : len(damaged) // 2 + 64] = bytes(64)
    (folder / "model.onnx").write_bytes(bytes(damaged))
    rebuilt, rows = _label(root, folder, output="rebuilt.csv")
    assert rebuilt.returncode == 1, rebuilt.stderr
    assert f"{folder / 'model.onnx'}: changed since it was written; writing it from model.h5, once..." in rebuilt.stdout
    _assert_same_rows(rows, keras_rows)
    # Passed on its own, a damaged export is refused in one line: it is the user's file, not the folder's copy.
    (folder / "model.onnx").write_bytes(bytes(damaged))
    refused = run_script("predict.py", "--model", folder / "model.onnx", "--input", root / "Dataset" / "Predict")
    assert (
        refused.returncode == 2
        and refused.stderr.count("\n") == 1
        and "modified since it was exported" in (refused.stderr)
    )


def _shadowing(tmp_path, *modules):
    """A PYTHONPATH folder whose `modules` fail to import, as when they are not installed."""
    shim = tmp_path / "shim"
    shim.mkdir()
    for module in modules:
        (shim / f"{module}.py").write_text(f'raise ImportError("No module named {module}")\n')
    return {"PYTHONPATH": str(shim)}


def test_labeling_on_onnx_runtime_never_imports_tensorflow(trained, keras_rows, tmp_path):
    root, model_dir = trained
    result, rows = _label(root, model_dir, env=_shadowing(tmp_path, "tensorflow", "keras"))
    assert result.returncode == 1, result.stderr
    _assert_same_rows(rows, keras_rows)


def test_a_runtime_that_is_not_installed_gives_way_to_keras_in_one_line(trained, keras_rows, tmp_path):
    root, model_dir = trained
    result, rows = _label(root, model_dir, env=_shadowing(tmp_path, "onnxruntime"))
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith(
        "Runtime: keras (onnxruntime is not installed (pip install -r requirements.txt brings it))."
    )
    _assert_same_rows(rows, keras_rows, tolerance=0)


def test_explain_needs_keras_and_says_so_for_another_runtime(trained, tmp_path):
    root, model_dir = trained
    result, _ = _label(root, model_dir, "--runtime", "onnx", "--explain", tmp_path / "cams")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--runtime onnx: --explain draws its Grad-CAM from the Keras model. Leave --runtime out" in result.stderr
    result, _ = _label(root, model_dir, "--explain", tmp_path / "cams", output="explained.csv")
    assert result.returncode == 1 and "Runtime: keras (--explain draws its Grad-CAM from the Keras model)" in (
        result.stdout
    )
    assert len(os.listdir(tmp_path / "cams")) == 10


def test_the_backbone_pass_runs_on_onnx_runtime_with_keras_features(tmp_path):
    model = models.build_model("efficientnet_lite0", 32, 2)
    backbone = models.backbone(model)
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    keras_features = runtimes.keras_model.runner(backbone)(pixels)
    forward, runtime, line = runtimes.network_runner(backbone, "auto", str(tmp_path), runtimes.MIN_PASS_IMAGES)
    assert runtime is runtimes.onnx and line.startswith("onnx (") and (tmp_path / "backbone.onnx").is_file()
    np.testing.assert_allclose(forward(pixels), keras_features, atol=1e-4)
    assert runtimes.keras_slowdown(backbone, forward, 32) > 0
    _, runtime, line = runtimes.network_runner(backbone, "auto", str(tmp_path), runtimes.MIN_PASS_IMAGES - 1)
    assert runtime is runtimes.keras_model and "fewer than the 1000 that repay an export" in line


def test_a_whole_network_scores_on_onnx_runtime_once_exported_as_keras_does(tmp_path):
    model = models.build_model("efficientnet_lite0", 32, 3)
    images = np.random.default_rng(1).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    job = types.SimpleNamespace(config=types.SimpleNamespace(runtime="auto", model_dir=str(tmp_path)))
    result = recipes.Result("fine-tune", "efficientnet_lite0", 32, model, model, images, {}, 3e-4)
    split = types.SimpleNamespace(labels=np.arange(20) % 3)
    rows = np.array([3, 1, 4, 15, 9, 2, 6, 5])  # any order, more than one batch
    keras_run, line = recipes.runner(job, result, runtimes.MIN_PASS_IMAGES - 1)
    assert "fewer than the 1000 that repay an export" in line and result.exported is None
    truth, in_keras = evaluation.probabilities_of(keras_run, split, rows, images)
    run, line = recipes.runner(job, result, runtimes.MIN_PASS_IMAGES)
    assert line.startswith("onnx (") and result.exported == str(tmp_path / "checkpoints" / "fine-tune" / "network.onnx")
    np.testing.assert_array_equal(truth, split.labels[rows])
    np.testing.assert_allclose(evaluation.probabilities_of(run, split, rows, images)[1], in_keras, atol=1e-4)
    # The next pass (the end of training) loads the same file; the flip mirrors the pictures as Keras's layers do.
    again, line = recipes.runner(job, result, runtimes.MIN_PASS_IMAGES)
    assert line == "onnx (exported)"
    flipped = runtimes.keras_model.runner(tta.with_flip(model))(images[rows])
    mirrored = evaluation.probabilities_of(tta._mirrored(again), split, rows, images)[1]
    np.testing.assert_allclose((in_keras + mirrored) / 2, flipped, atol=1e-4)
