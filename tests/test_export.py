"""Export to every format, labeling with each exported file as with the Keras model, damaged exports."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, class_image, run_script, write_class_tree

import config
from imgclf import artifacts, export, labeling, models, tta
from imgclf.cli import UsageError

pytestmark = pytest.mark.slow
FORMATS = ["onnx", "litert", "litert-int8", "saved-model"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The classic network trained on synthetic stripes, exported in every format; Predict holds a broken file."""
    root = tmp_path_factory.mktemp("export")
    data_dir = root / "Dataset"
    write_class_tree(data_dir / "Training_Set", ["cats", "dogs"], per_class=32)
    predict_dir = data_dir / "Predict"
    predict_dir.mkdir()
    for i in range(10):
        class_image(i % 2, 700 + i).save(predict_dir / f"photo_{i}.png")
    (predict_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    model_dir = root / "models"
    trained = run_script(
        "train_cnn.py", "--data-dir", data_dir, "--model-dir", model_dir, "--arch", "simple", "--image-size", "32",
        "--epochs", "6", "--batch-size", "8", "--tta", "flip",  # every export carries the test-time flip
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout + trained.stderr
    for fmt in FORMATS:
        result = run_script("predict.py", "--model-dir", model_dir, "--export", fmt)
        assert result.returncode == 0, fmt + result.stdout + result.stderr
        assert f"Exported {fmt} to " in result.stdout
    return root, data_dir, model_dir


def _label(root, model, *args, output="predictions.csv"):
    result = run_script("predict.py", "--model", model, "--input", root / "Dataset" / "Predict", "--output",
                        root / output, *args)  # fmt: skip
    with open(root / output, newline="", encoding="utf-8") as handle:
        return result, list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def keras_labels(exported):
    """predict.py's result and rows with the Keras model, what every exported file is compared with."""
    root, _, model_dir = exported
    return _label(root, model_dir / "model.h5", output="keras.csv")


def test_metadata_lists_every_export_with_its_digest_and_contract(exported):
    _, _, model_dir = exported
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert set(metadata["exports"]) == set(FORMATS)
    for fmt in ("onnx", "litert", "litert-int8"):
        entry = metadata["exports"][fmt]
        assert entry["sha256"] == artifacts.sha256(model_dir / entry["file"])
        assert entry["input"]["shape"] == ["batch", 32, 32, 3] and entry["input"]["dtype"] == "float32"
        assert entry["output"]["shape"] == ["batch", 2]
    assert metadata["exports"]["litert-int8"]["calibration_images"] == 64  # every training image (fewer than 300)
    # model.h5's own digest is untouched: the Keras model still loads.
    assert metadata["sha256"]["model.h5"] == artifacts.sha256(model_dir / "model.h5")
    assert (model_dir / "model_int8.tflite").stat().st_size < (model_dir / "model.tflite").stat().st_size / 2


@pytest.mark.parametrize("name,tolerance", [("model.onnx", 1e-3), ("model.tflite", 1e-3), ("model_int8.tflite", 0.1)])
def test_exported_files_label_like_the_keras_model(exported, keras_labels, name, tolerance):
    root, _, model_dir = exported
    keras_result, keras_rows = keras_labels
    result, rows = _label(root, model_dir / name, output=f"{name}.csv")
    assert keras_result.returncode == result.returncode == 1, result.stderr  # the broken file: exit status 1
    assert [row["path"] for row in rows] == [row["path"] for row in keras_rows]
    broken = [row for row in rows if row["error"]]
    assert [row["path"].endswith("broken.jpg") for row in broken] == [True]
    for row, expected in zip(rows, keras_rows):
        if expected["error"]:
            continue
        assert row["label"] == expected["label"], row
        for column in ("prob_cats", "prob_dogs"):
            assert abs(float(row[column]) - float(expected[column])) <= tolerance + 1e-4  # CSV has 4 decimals
    truth = {f"photo_{i}.png": ("cats", "dogs")[i % 2] for i in range(10)}
    assert sum(row["label"] == truth.get(row["path"].rsplit("/", 1)[-1]) for row in rows) >= 8  # it learned


def test_litert_files_hold_only_builtin_operators(exported):
    from ai_edge_litert.interpreter import Interpreter

    _, _, model_dir = exported
    for name in ("model.tflite", "model_int8.tflite"):
        interpreter = Interpreter(model_path=str(model_dir / name))
        operators = {op["op_name"] for op in interpreter._get_ops_details()}
        assert operators and not [op for op in operators if "Flex" in op or op == "CUSTOM"], operators
    int8 = Interpreter(model_path=str(model_dir / "model_int8.tflite"))
    assert any(detail["dtype"] == np.int8 for detail in int8.get_tensor_details())


def test_saved_model_gives_class_probabilities(exported):
    import tensorflow as tf

    _, _, model_dir = exported
    images = np.stack([np.asarray(class_image(i % 2, 700 + i, 32)) for i in range(4)]).astype(np.float32)
    loaded = tf.saved_model.load(str(model_dir / "saved_model"))
    probabilities = np.asarray(loaded.serve(images))
    model = artifacts.load_model(str(model_dir / "model.h5"))
    network = tta.unwrap(model)  # trained with --tta flip: the exports answer for each image and its mirror image
    sigmoid = (np.asarray(network(images)) + np.asarray(network(images[:, :, ::-1]))) / 2
    np.testing.assert_allclose(np.asarray(model(images)), sigmoid, atol=1e-6)
    np.testing.assert_allclose(probabilities, np.concatenate([1 - sigmoid, sigmoid], axis=1), atol=1e-5)


def test_evaluate_sort_into_and_threshold_work_with_an_exported_file(exported, tmp_path):
    root, data_dir, model_dir = exported
    result = run_script("predict.py", "--model", model_dir / "model.onnx", "--input", data_dir / "Training_Set",
                        "--evaluate", "--output", tmp_path / "p.csv", "--sort-into", tmp_path / "sorted")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "accuracy:" in result.stdout and (tmp_path / "p_confusion_matrix.png").exists()
    assert "(no Grad-CAM: an exported model has no gradients)" in (tmp_path / "p_report.html").read_text()
    assert len(list((tmp_path / "sorted").rglob("*.*"))) == 64
    _, rows = _label(root, model_dir / "model_int8.tflite", "--threshold", "0.0", output="all_dogs.csv")
    assert {row["label"] for row in rows if not row["error"]} == {"dogs"}


def test_damaged_or_foreign_exports_get_one_line_and_exit_status_2(exported, tmp_path):
    _, _, model_dir = exported
    copy = tmp_path / "models"
    shutil.copytree(model_dir, copy)
    for name in ("model.onnx", "model_int8.tflite"):
        path = copy / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
        with pytest.raises(UsageError, match="modified since it was exported"):
            labeling.predict(config.PredictConfig(model=str(path), input=[str(tmp_path)]))
        damaged = run_script("predict.py", "--model", path, "--input", tmp_path, "--ignore-checksum")
        assert damaged.returncode == 2 and "not a valid" in damaged.stderr, damaged.stderr
        assert damaged.stderr.count("\n") == 1 and "Traceback" not in damaged.stderr
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(model_dir / "model.onnx", alone / "model.onnx")
    refusals = [
        ({"model": str(alone / "model.onnx")}, "no metadata.json beside it"),
        ({"model": str(copy / "model.onnx"), "export": "onnx"}, "need the Keras model"),
        ({"model_dir": str(copy), "export": "litert-int8", "calibration": str(tmp_path / "no")}, "--calibration"),
        ({"model": str(copy / "saved_model")}, "is a folder"),
        ({"model": str(model_dir / "model.onnx"), "explain": str(tmp_path / "why")}, "--explain needs the Keras model"),
    ]
    for settings, message in refusals:
        with pytest.raises(UsageError, match=message):
            labeling.predict(config.PredictConfig(input=[str(tmp_path)], **settings))


def test_mixed_precision_models_export_in_float32(tmp_path):
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = models.build_model("efficientnet_lite0", 32, 3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    network = export.inference_network(model)
    policies = set()

    def collect(layer):
        policies.add(layer.dtype_policy.name)
        for inner in getattr(layer, "layers", []):
            collect(inner)

    collect(network)
    assert policies == {"float32"}
    images = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(network(images)), np.asarray(model(images), np.float32), atol=0.05)
    assert np.asarray(network(images)).dtype == np.float32 and network.output_shape == (None, 3)


def _readme_example(model_dir, photo):
    """(label, confidence) that the README's ONNX example prints for `photo`, run with TensorFlow unimportable."""
    readme = (ROOT / "README.md").read_text()
    example = readme.split("Using `model.onnx` from plain Python")[1].split("```python\n")[1].split("```")[0]
    assert len([line for line in example.splitlines() if line.strip()]) <= 10
    blocker = "import sys\nsys.modules['tensorflow'] = sys.modules['keras'] = None  # any import of them fails\n"
    code = blocker + example.replace('"models/', f'"{model_dir}/')
    result = subprocess.run([sys.executable, "-c", code, str(photo)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    label, confidence = result.stdout.split()
    return label, float(confidence)


def test_the_readme_onnx_example_runs_without_tensorflow(exported, keras_labels):
    _, data_dir, model_dir = exported
    label, confidence = _readme_example(model_dir, data_dir / "Predict" / "photo_3.png")
    expected = next(row for row in keras_labels[1] if row["path"].endswith("photo_3.png"))
    assert label == expected["label"] and abs(confidence - float(expected["confidence"])) < 2e-3


def test_the_readme_onnx_example_reduces_colour_to_grey_for_a_grayscale_model(tmp_path):
    data_dir, model_dir = tmp_path / "Dataset", tmp_path / "models"
    for label, name in enumerate(["normal", "pneumonia"]):
        (data_dir / "Training_Set" / name).mkdir(parents=True)
        for i in range(16):
            class_image(label, 1000 * label + i).convert("L").save(data_dir / "Training_Set" / name / f"{i}.png")
    trained = run_script("train_cnn.py", "--data-dir", data_dir, "--model-dir", model_dir, "--arch", "simple",
                         "--image-size", "32", "--epochs", "3", "--batch-size", "8")  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert run_script("predict.py", "--model-dir", model_dir, "--export", "onnx").returncode == 0
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        class_image(i % 2, 60 + i).save(photos / f"colour_{i}.png")  # colour photos for a model that saw grey
    result = run_script("predict.py", "--model", model_dir / "model.onnx", "--input", photos, "--output",
                        tmp_path / "p.csv")  # fmt: skip
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            label, confidence = _readme_example(model_dir, row["path"])
            assert label == row["label"] and abs(confidence - float(row["confidence"])) < 2e-3
