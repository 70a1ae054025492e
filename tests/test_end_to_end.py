"""Runs the real scripts, as a user would, on small synthetic images at 32 px for one epoch."""

import csv
import hashlib
import json
import re
import shutil

import keras
import numpy as np
import pytest
from conftest import class_image, run_script, write_class_tree

from imgclf import tta

pytestmark = pytest.mark.slow

MODEL_FILES = [
    "model.h5",
    "model.weights.h5",
    "metadata.json",
    "history.csv",
    "training_curves.png",
    "confusion_matrix.png",
    "roc_curve.png",
    "pr_curve.png",
    "report.txt",
    "skipped_files.txt",
    "splits.csv",
    "summary.txt",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One trained model shared by the tests below; its Training_Set includes a broken file."""
    from conftest import class_image

    root = tmp_path_factory.mktemp("e2e")
    data_dir = root / "Dataset"
    write_class_tree(data_dir / "Training_Set", ["cats", "dogs"], per_class=24)
    write_class_tree(data_dir / "Test_Set", ["cats", "dogs"], per_class=8, start_seed=500)
    (data_dir / "Training_Set" / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    predict_dir = data_dir / "Predict"
    predict_dir.mkdir()
    for i in range(6):
        class_image(i % 2, 900 + i).save(predict_dir / f"photo {i}, é.jpg")
    model_dir = root / "models"
    result = run_script(
        "train_cnn.py",
        "--data-dir",
        data_dir,
        "--model-dir",
        model_dir,
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--recipe",
        "features",  # One epoch of each recipe would prove nothing more: tests/test_recipes.py tries them.
        "--tta",
        "flip",  # Every test below works on a model with the test-time flip built in.
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return root, data_dir, model_dir, result


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_training_writes_every_artifact(trained):
    _, _, model_dir, result = trained
    for name in MODEL_FILES:
        assert (model_dir / name).is_file(), name
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["class_names"] == ["cats", "dogs"]
    assert metadata["image_size"] == 32 and metadata["architecture"] == "efficientnet_lite0"
    assert metadata["test"]["source"] == "Test_Set" and metadata["test"]["images"] == 16
    assert metadata["validation"]["source"] == "0.2 of Training_Set"
    assert metadata["training"]["images"] + metadata["validation"]["images"] == 48  # the broken file is in neither
    assert metadata["training"] == {**metadata["training"], "skipped_files": 1, "epochs_run": 1}
    assert "scored on: Test_Set, 16 images, once, after training" in (model_dir / "report.txt").read_text()
    assert set(metadata["versions"]) >= {"tensorflow", "keras", "python"}
    history = (model_dir / "history.csv").read_text().splitlines()
    assert len(history) == 2 and "seconds" in history[0].split(",")  # header + one epoch, with elapsed time
    assert metadata["training"]["train_images_per_second"] > 0 and metadata["trained_with"] in (
        "float32",
        "mixed_bfloat16",
    )
    assert "sensitivity (recall of 'dogs')" in (model_dir / "report.txt").read_text()
    assert "Test accuracy" in result.stdout and "(Test_Set, scored once)" in result.stdout
    assert not list(model_dir.glob(".tmp-*")) and not (model_dir / ".decoded-images.npy").exists()
    assert not (model_dir / "checkpoints").exists()  # A finished run has nothing to resume; model.h5 is the best epoch.


def test_the_network_size_is_printed_first_and_summarised(trained):
    _, _, model_dir, result = trained
    first_lines = result.stdout.splitlines()[:4]
    assert any(line.startswith("Network 'efficientnet_lite0': ") and " parameters (" in line for line in first_lines)
    summary = (model_dir / "summary.txt").read_text()
    assert "Total params" in summary and "predictions (Dense)" in summary


def test_the_default_pretrained_model_loads_in_safe_mode_with_no_code_in_it(trained):
    from imgclf import artifacts

    _, _, model_dir, _ = trained
    assert artifacts.code_references(artifacts.stored_config(str(model_dir / "model.h5"))) == []
    model = artifacts.load_model(str(model_dir / "model.h5"))  # safe_mode=True
    network = tta.unwrap(model)  # --tta flip: the network answers for each image and its mirror image
    assert network is not model and network.layers[1].name == "efficientnet_lite0" and not network.layers[1].trainable
    images = np.stack([np.asarray(class_image(i % 2, 40 + i, 32)) for i in range(4)]).astype(np.float32)
    expected = (np.asarray(network(images)) + np.asarray(network(images[:, :, ::-1]))) / 2
    np.testing.assert_allclose(np.asarray(model(images)), expected, atol=1e-6)
    flip = json.loads((model_dir / "metadata.json").read_text())["test_time_flip"]
    assert flip["used"] and flip["why"] == "--tta flip" and set(flip["validation"]) == {"plain", "flipped"}


def test_init_from_an_earlier_model_with_another_class(trained, tmp_path):
    from imgclf import artifacts

    _, _, model_dir, _ = trained
    data_dir = tmp_path / "Dataset"
    write_class_tree(data_dir / "Training_Set", ["birds", "cats", "dogs"], per_class=8)
    new_dir = tmp_path / "models"
    result = run_script("train_cnn.py", "--data-dir", data_dir, "--model-dir", new_dir, "--init-from", model_dir,
                        "--epochs", "1", "--batch-size", "8", "--validation-split", "0.25",
                        "--recipe", "fine-tune")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "its classes ['cats', 'dogs'] differ, so its body is kept" in result.stdout
    metadata = json.loads((new_dir / "metadata.json").read_text())
    assert metadata["class_names"] == ["birds", "cats", "dogs"] and metadata["image_size"] == 32
    assert metadata["architecture"] == "efficientnet_lite0" and metadata["training"]["recipe"] == "fine-tune"
    assert [row["recipe"] for row in metadata["leaderboard"]] == ["features", "fine-tune"]  # the head first
    earlier, now = (tta.unwrap(artifacts.load_model(str(folder / "model.h5"))) for folder in (model_dir, new_dir))
    assert now.output_shape == (None, 3) and not now.layers[1].trainable  # frozen again once fine-tuned
    changed = set()
    for old, new in zip(earlier.layers[1].layers, now.layers[1].layers):
        for old_weights, new_weights in zip(old.get_weights(), new.get_weights()):
            if isinstance(old, keras.layers.BatchNormalization):  # kept in inference mode: its statistics too
                np.testing.assert_array_equal(old_weights, new_weights)
            elif not np.array_equal(old_weights, new_weights):
                changed.add(type(old).__name__)
    assert {"Conv2D", "DepthwiseConv2D"} <= changed  # the ImageNet body itself was fine-tuned
    result = run_script("train_cnn.py", "--data-dir", data_dir, "--model-dir", new_dir, "--init-from", model_dir,
                        "--image-size", "64")  # fmt: skip
    assert result.returncode == 2 and "continues its efficientnet_lite0 network at 32 px" in result.stderr
    assert "Leave --image-size out" in result.stderr


def test_weights_file_holds_the_weights_alone(trained):
    import h5py

    _, _, model_dir, _ = trained
    with h5py.File(model_dir / "model.weights.h5") as handle:
        assert "optimizer" not in handle and "layers" in handle


def test_unreadable_training_file_is_skipped_and_listed(trained):
    _, _, model_dir, result = trained
    skipped = (model_dir / "skipped_files.txt").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith(str(model_dir.parent / "Dataset" / "Training_Set" / "dogs"))
    assert "broken.jpg\t" in skipped[0]
    remain = r"Skipped 1 unreadable file\(s\), listed in .*; 3\d training, \d+ validation and 16 test images remain"
    assert re.search(remain, result.stdout)


def test_predict_labels_every_file_in_order(trained):
    root, data_dir, model_dir, _ = trained
    output = root / "predictions.csv"
    result = run_script("predict.py", "--model-dir", model_dir, "--input", data_dir / "Predict", "--output", output)
    assert result.returncode == 0, result.stderr
    rows = _rows(output)
    assert list(rows[0]) == ["path", "label", "confidence", "prob_cats", "prob_dogs", "error"]
    assert [row["path"] for row in rows] == sorted(str(p) for p in (data_dir / "Predict").iterdir())
    for row in rows:
        assert row["label"] in ("cats", "dogs") and row["error"] == ""
        assert abs(float(row["prob_cats"]) + float(row["prob_dogs"]) - 1) < 1e-3
        assert float(row["confidence"]) == float(row[f"prob_{row['label']}"])  # the chosen class's probability
    assert len([line for line in result.stdout.splitlines() if "\t" in line]) == 6


def test_predict_reports_unreadable_files_with_exit_status_1(trained):
    root, data_dir, model_dir, _ = trained
    inputs = root / "mixed"
    inputs.mkdir()
    (inputs / "good.jpg").write_bytes((data_dir / "Test_Set" / "cats" / "img_0.jpg").read_bytes())
    (inputs / "notes.jpg").write_text("shopping list")
    output = root / "mixed.csv"
    result = run_script("predict.py", "--model-dir", model_dir, "--input", inputs, "--output", output)
    assert result.returncode == 1
    rows = {row["path"].rsplit("/", 1)[-1]: row for row in _rows(output)}
    assert rows["good.jpg"]["label"] in ("cats", "dogs") and rows["good.jpg"]["error"] == ""
    assert rows["notes.jpg"]["label"] == "" and "not an image" in rows["notes.jpg"]["error"]
    assert "Traceback" not in result.stderr


def test_evaluate_and_sort_into_leave_originals_untouched(trained):
    root, data_dir, model_dir, _ = trained
    test_set = data_dir / "Test_Set"
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in test_set.rglob("*") if p.is_file()}
    output = root / "eval.csv"
    result = run_script(
        "predict.py",
        "--model-dir",
        model_dir,
        "--input",
        test_set,
        "--output",
        output,
        "--evaluate",
        "--sort-into",
        root / "sorted",
    )
    assert result.returncode == 0, result.stderr
    report_text = (root / "eval_report.txt").read_text()
    assert "accuracy:" in report_text and "balanced accuracy:" in report_text
    for name in ("eval_confusion_matrix.png", "eval_roc_curve.png", "eval_pr_curve.png"):
        assert (root / name).is_file() and str(root / name) in result.stdout  # each named whole
    # The ROC AUC in the report is the share of (dog, cat) pairs in which the dog scores higher.
    rows = _rows(output)
    dogs = np.array([float(r["prob_dogs"]) for r in rows if "/dogs/" in r["path"].replace("\\", "/")])
    cats = np.array([float(r["prob_dogs"]) for r in rows if "/cats/" in r["path"].replace("\\", "/")])
    pairs = dogs[:, None] - cats[None, :]
    auc = np.mean((pairs > 0) + 0.5 * (pairs == 0))
    assert f"ROC AUC: {auc:.4f}" in report_text
    sorted_files = list((root / "sorted").rglob("*.*"))
    assert len(sorted_files) == 16 and {p.parent.name for p in sorted_files} <= {"cats", "dogs"}
    assert before == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in test_set.rglob("*") if p.is_file()}


def test_evaluate_on_some_of_the_classes(trained):
    root, data_dir, model_dir, _ = trained
    only_cats = root / "only_cats"
    shutil.copytree(data_dir / "Test_Set" / "cats", only_cats / "cats")
    output = root / "cats.csv"
    args = ["--model-dir", model_dir, "--input", only_cats, "--output", output, "--evaluate"]
    result = run_script("predict.py", *args)
    assert result.returncode == 0, result.stderr
    report = (root / "cats_report.txt").read_text()
    assert "(8 images" not in report and "/8)" in report.splitlines()[0]
    assert "(no images of 'dogs' here: left out of the averages)" in report
    shutil.copytree(data_dir / "Test_Set" / "dogs", only_cats / "wolves")
    result = run_script("predict.py", *args)
    assert result.returncode == 2
    assert "its class folders ['wolves'] are not classes of the model ['cats', 'dogs']" in result.stderr


def test_a_model_file_without_its_metadata_works_with_classes(trained):
    root, data_dir, model_dir, _ = trained
    alone = root / "alone"
    alone.mkdir()
    shutil.copy(model_dir / "model.h5", alone / "model.h5")
    args = ["--model", alone / "model.h5", "--input", data_dir / "Predict"]
    result = run_script("predict.py", *args, "--output", root / "alone.csv")
    assert result.returncode == 2 and "no metadata.json beside it to name the classes. Pass --classes" in result.stderr
    result = run_script("predict.py", *args, "--classes", "cats,dogs", "--output", root / "alone.csv")
    assert result.returncode == 0, result.stderr
    result = run_script("predict.py", "--model-dir", model_dir, "--input", data_dir / "Predict", "--output",
                        root / "with.csv")  # fmt: skip
    # The same probabilities; the labels may differ, as only metadata.json holds the threshold chosen in training.
    alone_rows, with_rows = _rows(root / "alone.csv"), _rows(root / "with.csv")
    assert [row["prob_dogs"] for row in alone_rows] == [row["prob_dogs"] for row in with_rows]


def _assert_flip_follows_the_rule(model_dir, weighted):
    """--tta auto (colour pictures): the flip is kept when it labels the validation images better (balanced accuracy
    when classes are weighted) by more than one standard error, with no higher loss."""
    from imgclf import artifacts

    flip = json.loads((model_dir / "metadata.json").read_text())["test_time_flip"]
    plain, flipped = flip["validation"]["plain"], flip["validation"]["flipped"]
    measure = "balanced_accuracy" if weighted else "accuracy"
    assert flip["gain"] == pytest.approx(flipped[measure] - plain[measure], abs=2e-4)
    assert flip["used"] == (flip["gain"] > flip["standard_error"] and flipped["loss"] <= plain["loss"])
    model = artifacts.load_model(str(model_dir / "model.h5"))
    assert (tta.unwrap(model) is not model) == flip["used"]


def test_three_classes_without_test_set_use_a_split_and_softmax(tmp_path):
    data_dir = tmp_path / "Dataset"
    write_class_tree(data_dir / "Training_Set", ["glass", "metal", "paper"], per_class=10)
    model_dir = tmp_path / "models"
    result = run_script(
        "train_cnn.py",
        "--data-dir",
        data_dir,
        "--model-dir",
        model_dir,
        "--arch",
        "simple",
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--validation-split",
        "0.3",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["class_names"] == ["glass", "metal", "paper"]
    assert metadata["validation"] == {**metadata["validation"], "source": "0.3 of Training_Set", "images": 9}
    output = tmp_path / "p.csv"
    result = run_script(
        "predict.py", "--model-dir", model_dir, "--input", data_dir / "Training_Set", "--output", output
    )
    assert result.returncode == 0, result.stderr
    rows = _rows(output)
    assert len(rows) == 30 and {"prob_glass", "prob_metal", "prob_paper"} <= set(rows[0])
    assert metadata["threshold"] is None and "roc_auc" in metadata["validation"]
    _assert_flip_follows_the_rule(model_dir, weighted=False)
    assert (model_dir / "roc_curve.png").is_file()
    refused = run_script("predict.py", "--model-dir", model_dir, "--input", data_dir, "--threshold", "0.3")
    assert refused.returncode == 2 and "`--threshold` applies to two classes" in refused.stderr
    for flag, value in (("--threshold", "0.3"), ("--target-recall", "glass=0.9")):
        refused = run_script("train_cnn.py", "--data-dir", data_dir, "--model-dir", tmp_path / "m2", flag, value)
        assert refused.returncode == 2 and f"`{flag}` applies to two classes" in refused.stderr
        assert not (tmp_path / "m2").exists()


def test_imbalanced_classes_get_weights_and_a_chosen_threshold(tmp_path):
    data_dir = tmp_path / "Dataset"
    write_class_tree(data_dir / "Training_Set", ["normal", "pneumonia"], per_class=8)
    for path in write_class_tree(tmp_path / "more", ["normal"], per_class=24, start_seed=300):  # 32 against 8
        shutil.move(path, data_dir / "Training_Set" / "normal" / ("more_" + path.rsplit("/", 1)[-1]))
    write_class_tree(data_dir / "Validation_Set", ["normal", "pneumonia"], per_class=4, start_seed=600)
    model_dir = tmp_path / "models"
    common = ["--data-dir", data_dir, "--arch", "simple", "--epochs", "2", "--image-size", "32"]
    result = run_script("train_cnn.py", *common, "--model-dir", model_dir, "--target-recall", "pneumonia=1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Class weights: normal 0.62, pneumonia 2.50 (inverse frequency" in result.stdout.splitlines()[2]
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["class_weights"] == {"normal": 0.625, "pneumonia": 2.5}
    assert metadata["threshold_chosen_by"].startswith("--target-recall")
    assert "recall of 'pneumonia'): 1.0000" in (model_dir / "report.txt").read_text()  # met on validation
    _assert_flip_follows_the_rule(model_dir, weighted=True)
    unweighted = run_script("train_cnn.py", *common, "--model-dir", tmp_path / "m2", "--class-weight", "none")
    assert "Class weights: none (--class-weight none; the largest class has 4.0x" in unweighted.stdout
    unknown = run_script("train_cnn.py", *common, "--model-dir", tmp_path / "m3", "--target-recall", "cancer=0.9")
    assert unknown.returncode == 2 and "names class 'cancer', which is not one of normal, pneumonia" in unknown.stderr


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("train_cnn.py", ["--data-dir", "{tmp}/nowhere"], "Training_Set: folder not found."),
        ("train_cnn.py", ["--validation-split", "1.5"], "`--validation-split` must be between 0.01 and 0.9"),
        ("predict.py", ["--model-dir", "{tmp}/no-models"], "--model-dir: {tmp}/no-models/model.h5 not found."),
    ],
)
def test_usage_errors_are_one_line_with_exit_status_2(tmp_path, script, args, message):
    result = run_script(script, *[arg.format(tmp=tmp_path) for arg in args])
    assert result.returncode == 2
    assert message.format(tmp=tmp_path) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_sort_into_twice_copies_once_and_never_labels_its_own_copies_or_a_model(trained, tmp_path):
    from conftest import class_image

    _, data_dir, model_dir, _ = trained
    inputs = tmp_path / "photos"
    shutil.copytree(data_dir / "Predict", inputs)
    (inputs / "more").mkdir()
    class_image(0, 4242).save(inputs / "more" / "photo 0, é.jpg")  # same name as another input, other content
    shutil.copytree(model_dir, inputs / "my model")  # its plots are not photos to label
    sorted_dir = inputs / "sorted"
    command = ["predict.py", "--model-dir", model_dir, "--input", inputs, "--sort-into", sorted_dir]
    outputs = []
    for run in range(2):
        result = run_script(*command, "--output", tmp_path / f"run{run}.csv")
        assert result.returncode == 0, result.stderr
        assert len(_rows(tmp_path / f"run{run}.csv")) == 7  # the 7 photos, never the copies or the model's plots
        assert f"Left out {inputs / 'my model'}: a model folder." in result.stdout
        outputs.append(result.stdout)
    assert "Copied 7 image(s)" in outputs[0] and "were there already" not in outputs[0]
    assert "Copied 0 image(s)" in outputs[1] and "7 were there already (same content), not copied again" in outputs[1]
    assert f"Left out {sorted_dir}: an output folder." in outputs[1] and str(sorted_dir) + ":" not in outputs[0]
    copies = sorted(path.name for path in sorted_dir.rglob("*.jpg"))
    assert len(copies) == 7 and "photo 0, é_1.jpg" in copies  # the two different files of one name both kept
    result = run_script("predict.py", "--model-dir", model_dir, "--input", inputs, "--sort-into", inputs)
    assert result.returncode == 2 and "that is an --input folder" in result.stderr
