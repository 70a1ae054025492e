"""What the README's "Use your own photos" says, done from a fresh copy of the repository.

The repository's files (as `git ls-files` lists them: a clone's contents,
including the empty `Dataset/Test_Set/` and `Dataset/Predict/` with their
.gitkeep, plus new files not yet committed and not ignored) are copied into a
temporary folder, photos are put where the README says, and the real scripts
run there with their default paths, as a new user runs them.
"""

import csv
import json
import shutil
import subprocess

import pytest
from conftest import ROOT, class_image, run_script, run_shell, write_class_tree

pytestmark = pytest.mark.slow

FAST = ["--epochs", "1", "--image-size", "32", "--batch-size", "8", "--recipe", "features"]  # recipes: test_recipes


def _clone(destination):
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, tracked):
        source = ROOT / name
        if source.is_file():  # A file deleted in the working tree but not yet in git is not there for users either.
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


@pytest.fixture
def clone(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the repository's git checkout")
    clone = _clone(tmp_path / "clone")
    assert (clone / "Dataset" / "Test_Set" / ".gitkeep").exists()  # What made the first run fail before.
    return clone


def _csv_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _add_predict_photos(clone, count=4):
    for i in range(count):
        class_image(i % 2, 700 + i).save(clone / "Dataset" / "Predict" / f"new_{i}.jpg")


def test_photos_in_training_set_only_train_and_predict(clone):
    write_class_tree(clone / "Dataset" / "Training_Set", ["Cats", "Dogs"], per_class=20)
    result = run_script("train_cnn.py", *FAST, cwd=clone, script_dir=clone)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Dataset/Test_Set holds no images, so it is left out." in result.stdout
    metadata = json.loads((clone / "models" / "metadata.json").read_text())
    assert metadata["class_names"] == ["Cats", "Dogs"]
    assert metadata["validation"]["source"] == "0.2 of Training_Set" and metadata["validation"]["images"] == 8

    result = run_script("predict.py", cwd=clone, script_dir=clone)  # Predict/ holds only its .gitkeep.
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Dataset/Predict: no pictures there to label. Put them there" in result.stderr

    _add_predict_photos(clone)
    result = run_script("predict.py", cwd=clone, script_dir=clone)
    assert result.returncode == 0, result.stderr
    rows = _csv_rows(clone / "predictions.csv")
    assert [row["path"].rsplit("/", 1)[-1] for row in rows] == [f"new_{i}.jpg" for i in range(4)]
    assert all(row["label"] in ("Cats", "Dogs") for row in rows)


def test_training_set_and_test_set_in_any_spelling(clone):
    write_class_tree(clone / "Dataset" / "Training_Set", ["Cats", "Dogs"], per_class=16)
    (clone / "Dataset" / "Test_Set").rename(clone / "Dataset" / "test_set")
    write_class_tree(clone / "Dataset" / "test_set", ["Cats", "Dogs"], per_class=5, start_seed=300)
    result = run_script("train_cnn.py", *FAST, cwd=clone, script_dir=clone)
    assert result.returncode == 0, result.stdout + result.stderr
    metadata = json.loads((clone / "models" / "metadata.json").read_text())
    assert metadata["test"]["source"] == "test_set" and metadata["test"]["images"] == 10  # scored, chose nothing
    assert metadata["validation"]["source"] == "0.2 of Training_Set" and metadata["validation"]["images"] == 6
    assert metadata["training"]["images"] == 26


def test_output_into_a_closed_pipe_loses_nothing(clone):
    write_class_tree(clone / "Dataset" / "Training_Set", ["Cats", "Dogs"], per_class=16)
    _add_predict_photos(clone, count=30)
    for script, written in (("train_cnn.py", "models/model.h5"), ("predict.py", "predictions.csv")):
        flags = " ".join(FAST) if script == "train_cnn.py" else ""
        result = run_shell(f'"$PYTHON" {script} {flags} | head -n 1; echo "status=${{PIPESTATUS[0]}}" >&2', clone)
        assert "status=0" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr
        assert len(result.stdout.splitlines()) == 1
        assert (clone / written).is_file(), script
    assert len(_csv_rows(clone / "predictions.csv")) == 30


def _readme_commands(readme, heading):
    """The command lines of the first bash block after `heading` in the README, comments dropped."""
    block = readme.split(heading, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_a_walk_through_the_readmes_commands(clone, tmp_path):
    """Every command of "Use your own photos" and "Take the model anywhere", in order, as printed (training
    with small, fast settings added), on photos put where the README says."""
    readme = (clone / "README.md").read_text()
    commands = _readme_commands(readme, "## Use your own photos") + _readme_commands(readme, "## Take the model")
    assert len(commands) == 11 and commands[0].startswith("python train_cnn.py")
    write_class_tree(clone / "Dataset" / "Training_Set", ["Cats", "Dogs"], per_class=16)
    write_class_tree(clone / "Dataset" / "Test_Set", ["Cats", "Dogs"], per_class=4, start_seed=300)
    _add_predict_photos(clone)
    write_class_tree(clone / "photos", ["Cats", "Dogs"], per_class=2, start_seed=400)  # "--input photos/"
    home = tmp_path / "home"
    write_class_tree(home / "holiday", ["beach", "hills"], per_class=2, start_seed=600)  # any layout
    for command in commands:
        line = command.replace("python ", '"$PYTHON" ', 1).replace("~/", f"{home}/")
        if "train_cnn.py" in line:
            line += " " + " ".join(FAST)
        result = run_shell(line, clone)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        assert "Traceback" not in result.stderr, command
    assert len(_csv_rows(clone / "predictions.csv")) == 4  # the last command labeled Test_Set with model.onnx
    assert len(list((home / "sorted").rglob("*.jpg"))) + len(list((home / "sorted").rglob("*.png"))) == 4
    assert (clone / "predictions_report.html").is_file() and len(list((clone / "why").rglob("*.png"))) == 4
    for name in ("model.onnx", "model.tflite", "model_int8.tflite", "saved_model"):
        assert (clone / "models" / name).exists(), name
