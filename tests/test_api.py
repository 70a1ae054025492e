"""The Python API: the README's example runs as written, and its answers are predict.py's; `pip install .` gives
the commands and a library that a notebook's own config.py cannot shadow."""

import csv
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, _environment, class_image, run_script, write_class_tree
from PIL import Image

import imgclf

pytestmark = pytest.mark.slow


def readme_example():
    """The Python block of the README's 'Python API' section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A folder as a user has it (a small synthetic Dataset), after the README's example ran in it."""
    root = tmp_path_factory.mktemp("api")
    write_class_tree(root / "Dataset" / "Training_Set", ["a", "b"], per_class=24)
    write_class_tree(root / "Dataset" / "Test_Set", ["a", "b"], per_class=6, start_seed=700)
    (root / "Dataset" / "Predict").mkdir()
    for i in range(6):
        class_image(i % 2, 900 + i).save(root / "Dataset" / "Predict" / f"picture_{i}.png")
    (root / "Dataset" / "Predict" / "unreadable.jpg").write_bytes(b"not a picture")
    result = subprocess.run(
        [sys.executable, "-c", readme_example()], cwd=root, capture_output=True, text=True, timeout=600,
        env={**_environment(), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result.stdout


def test_the_readme_example_trains_labels_evaluates_and_explains(project):
    root, output = project
    lines = output.splitlines()
    assert re.search(r"^accuracy \d+\.\d%, balanced \d+\.\d%$", output, re.M), output[-2000:]
    first = next(line for line in lines if line.startswith("Dataset/Predict/picture_0.png "))
    assert first.split()[1] in ("a", "b")
    assert lines[-1] in ("a", "b")  # the model loaded back labels too
    assert (root / "models" / "model.onnx").is_file()
    with Image.open(root / "why.png") as overlay:
        assert overlay.size == (224, 224) and overlay.mode == "RGB"


def test_paths_pil_images_and_arrays_label_as_predict_py_does(project, tmp_path):
    root, _ = project
    predict = root / "Dataset" / "Predict"
    output = tmp_path / "p.csv"
    result = run_script("predict.py", "--model-dir", root / "models", "--input", predict, "--output", output)
    assert result.returncode == 1, result.stderr  # unreadable.jpg
    with open(output, newline="", encoding="utf-8") as handle:
        expected = {row["path"]: row for row in csv.DictReader(handle)}
    classifier = imgclf.load(root / "models")
    paths = sorted(expected)
    rows = classifier.predict(paths)
    assert [row["path"] for row in rows] == paths
    for row in rows:
        want = expected[row["path"]]
        assert set(row) == set(want)  # the CSV's fields
        assert row["label"] == want["label"] and row["error"] == want["error"]
        if not row["error"]:
            assert abs(row["prob_a"] - float(want["prob_a"])) < 1e-3
    assert "not an image" in rows[paths.index(str(predict / "unreadable.jpg"))]["error"]
    picture = next(path for path in paths if "unreadable" not in path)
    with Image.open(picture) as image:
        as_pil = classifier.predict(image)
        as_array = classifier.predict(np.asarray(image.convert("RGB")))
        grey = classifier.predict(np.asarray(image.convert("L")))
    assert as_pil["path"] == picture and as_array["path"] == ""
    for row in (as_pil, as_array):
        assert row["label"] == expected[picture]["label"]
        assert abs(row["prob_a"] - float(expected[picture]["prob_a"])) < 1e-3
    assert grey["label"] in ("a", "b") and not grey["error"]
    odd = classifier.predict(np.zeros((4, 4, 2)))
    assert odd["label"] == "" and "expected height x width" in odd["error"]


def test_evaluate_and_mistakes(project):
    root, _ = project
    classifier = imgclf.load(root / "models" / "model.onnx")
    figures = classifier.evaluate(root / "Dataset" / "Test_Set")
    assert figures["images"] == 12 and np.sum(figures["confusion_matrix"]) == 12
    assert figures["accuracy"] == np.trace(figures["confusion_matrix"]) / 12
    with pytest.raises(imgclf.UsageError, match="tim_budget: not a setting. Did you mean time_budget"):
        imgclf.train(root / "Dataset", tim_budget=1)
    with pytest.raises(imgclf.UsageError, match="not found. Train a model first"):
        imgclf.load(root / "nowhere")
    with pytest.raises(imgclf.UsageError, match="'c' is not one of the model's classes"):
        classifier.explain(root / "why.png", label="c")


def test_pip_install_gives_the_commands_and_a_library_no_config_py_shadows(project, tmp_path):
    root, _ = project
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target"]
    result = subprocess.run([*install, str(target), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    environment = {**_environment(), "PYTHONPATH": str(target)}
    command = [str(target / "bin" / "imgclf-predict"), "--model-dir", str(root / "models"), "--input"]
    labeled = subprocess.run(
        [*command, str(root / "Dataset" / "Test_Set"), "--output", str(tmp_path / "p.csv")],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert labeled.returncode == 0, labeled.stderr
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 13
    (tmp_path / "config.py").write_text("raise SystemExit('the notebook own config.py was imported')\n")
    picture = str(next((root / "Dataset" / "Test_Set" / "a").iterdir()))
    models = str(root / "models")
    code = f"import imgclf; print(imgclf.__file__); print(imgclf.load({models!r}).predict({picture!r})['label'])"
    used = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300
    )
    assert used.returncode == 0, used.stderr
    assert used.stdout.splitlines()[0].startswith(str(target)) and used.stdout.splitlines()[-1] in ("a", "b")
    assert os.path.isfile(target / "config.py")
