"""The recipes (features, scratch, fine-tune) and `auto`, which keeps the best on validation within a budget."""

import csv
import json
import signal
import subprocess
import sys
import time
import types

import keras
import numpy as np
import pytest
from conftest import ROOT, run_script, write_class_tree, write_mirror_tree
from test_resume import _start, _wait_for_epochs

from imgclf import fitting, recipes
from imgclf.recipes import choice, larger


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """A task frozen ImageNet features cannot solve (an "L" or its mirror image), trained with --recipe auto."""
    root = tmp_path_factory.mktemp("recipes")
    # 100 a class: with 60, scratch's batch-norm statistics sometimes did not settle in its few steps (chance level).
    write_mirror_tree(root / "Dataset" / "Training_Set", per_class=100)
    write_mirror_tree(root / "Dataset" / "Test_Set", per_class=20, seed=1)
    result = run_script("train_cnn.py", "--data-dir", root / "Dataset", "--model-dir", root / "m", "--image-size", "48")
    assert result.returncode == 0, result.stdout + result.stderr
    return root, result


@pytest.mark.slow
def test_auto_tries_every_recipe_and_keeps_the_clearly_better_one(mirrored):
    root, result = mirrored
    metadata = json.loads((root / "m" / "metadata.json").read_text())
    board = {row["recipe"]: row for row in metadata["leaderboard"]}
    assert list(board) == ["features", "scratch", "fine-tune", "larger"]  # cheapest first, larger last
    # Each one run, unless an earlier one left it nothing to gain.
    assert all("accuracy" in row and row["seconds"] > 0 for row in list(board.values())[:2]), board
    for row in list(board.values())[2:]:
        assert "accuracy" in row or row["outcome"].endswith("labels every validation image right"), board
    chosen = metadata["training"]["recipe"]
    assert chosen != "features" and board[chosen]["outcome"] == "chosen"
    # The best, or as good as the best within what the validation images can tell, with a lower loss.
    assert board[chosen]["accuracy"] >= board["features"]["accuracy"] + 0.15, board
    best = max(board.values(), key=lambda row: row.get("accuracy", 0))
    assert board[chosen] is best or board[chosen]["loss"] < best["loss"], board
    assert metadata["architecture"] == ("compact" if chosen == "scratch" else "efficientnet_lite0")
    # The first lines say what will be tried, the last which won and by how much.
    assert "Recipes to try within the 10-minute budget, cheapest first" in result.stdout
    assert f"Chosen: {chosen} (" in result.stdout
    assert "points over" in result.stdout or "no clear difference on 40 validation images" in result.stdout
    assert "grey pictures: augmentation makes no mirrored copies" in result.stdout  # else the labels would flip
    assert metadata["test_time_flip"] == {"used": False, "why": "grey pictures: left and right are not interchangeable"}
    report = (root / "m" / "report.txt").read_text()
    assert "== recipes tried (validation images) ==" in report and "not chosen" in report
    page = (root / "m" / "report.html").read_text()
    assert "Recipes tried" in page and f"<td>{chosen}</td>" in page
    # The saved model labels the test pictures, which chose nothing, as well as validation said.
    evaluated = run_script("predict.py", "--model-dir", root / "m", "--input", root / "Dataset" / "Test_Set",
                           "--evaluate", "--output", root / "test.csv")  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert float(evaluated.stdout.split("accuracy: ", 1)[1].split()[0]) >= 0.8


@pytest.mark.slow
def test_a_spent_budget_skips_the_later_candidates_and_says_so(tmp_path):
    write_mirror_tree(tmp_path / "Dataset" / "Training_Set", per_class=20)
    result = run_script("train_cnn.py", "--data-dir", tmp_path / "Dataset", "--model-dir", tmp_path / "m",
                        "--image-size", "32", "--time-budget", "0.01")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    metadata = json.loads((tmp_path / "m" / "metadata.json").read_text())
    outcomes = {row["recipe"]: row["outcome"] for row in metadata["leaderboard"]}
    assert outcomes["features"] == "chosen"  # the baseline always runs: a model in any case
    assert (
        outcomes["scratch"]
        == outcomes["fine-tune"]
        == outcomes["larger"]
        == "skipped: the 0.01-minute budget was spent"
    )
    assert "fine-tune skipped: the 0.01-minute budget was spent." in result.stdout


@pytest.mark.slow
def test_auto_tries_the_larger_backbone_last_and_saves_the_network_it_chose(tmp_path):
    write_mirror_tree(tmp_path / "Dataset" / "Training_Set", per_class=20)
    write_mirror_tree(tmp_path / "Dataset" / "Predict", per_class=3, seed=2)
    result = run_script("train_cnn.py", "--data-dir", tmp_path / "Dataset", "--model-dir", tmp_path / "m",
                        "--image-size", "32", "--epochs", "2")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # Lite2 at --image-size scaled as the networks' own sizes are (224 -> 260 px): 32 -> 37 px.
    assert "  larger: efficientnet_lite2 at 37 px, frozen; its head trained on its own features" in result.stdout
    assert "Computing efficientnet_lite2 features of every image at 37x37 px" in result.stdout
    metadata = json.loads((tmp_path / "m" / "metadata.json").read_text())
    board = {row["recipe"]: row for row in metadata["leaderboard"]}
    assert list(board) == ["features", "scratch", "fine-tune", "larger"]
    assert board["larger"]["network"] == "efficientnet_lite2, 37 px" and "accuracy" in board["larger"], board
    # What is saved is the network of the candidate chosen, at its own size, and it labels.
    chosen = board[metadata["training"]["recipe"]]
    assert chosen["outcome"] == "chosen"
    assert chosen["network"] == f"{metadata['architecture']}, {metadata['image_size']} px"
    labeled = run_script("predict.py", "--model-dir", tmp_path / "m", "--input", tmp_path / "Dataset" / "Predict",
                         "--output", tmp_path / "p.csv")  # fmt: skip
    assert labeled.returncode == 0, labeled.stderr
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 1 + 6


@pytest.mark.slow
def test_on_a_cpu_with_amx_only_the_plain_convolutions_compute_in_bfloat16(tmp_path, monkeypatch, capsys):
    # bfloat16 slows depthwise convolutions even on AMX (bench/RESULTS.md section 20): the EfficientNet-Lite
    # candidates compute in float32, compact (plain convolutions) in bfloat16, on any machine that says it has AMX.
    import imgclf
    from imgclf import devices

    monkeypatch.setattr(devices, "cpu_has_amx", lambda: True)
    write_mirror_tree(tmp_path / "Dataset" / "Training_Set", per_class=20)
    imgclf.train(tmp_path / "Dataset", model_dir=tmp_path / "m", image_size=32, epochs=1, recipe="auto")
    out = capsys.readouterr().out
    assert "float32 arithmetic (this CPU has AMX, but bfloat16 runs depthwise convolutions slower)" in out
    assert "compact computes in mixed_bfloat16 (this CPU has AMX, where bfloat16 is faster)." in out
    assert "efficientnet_lite0 computes in float32 (this CPU has AMX, but bfloat16" in out  # fine-tune, after it
    assert "training computes in mixed_bfloat16" not in out  # the frozen passes are never held to Keras by it
    metadata = json.loads((tmp_path / "m" / "metadata.json").read_text())
    chosen = metadata["training"]["recipe"]
    assert metadata["trained_with"] == ("mixed_bfloat16" if chosen == "scratch" else "float32"), metadata
    assert keras.mixed_precision.global_policy().name == "float32"


def test_larger_is_skipped_at_once_when_less_time_is_left_than_the_first_pass_took(tmp_path):
    config = types.SimpleNamespace(model_dir=str(tmp_path), arch="efficientnet_lite0", image_size=224)
    job = types.SimpleNamespace(config=config, split=types.SimpleNamespace(paths=["a.jpg"] * 100),
                                decoded=types.SimpleNamespace(seconds=120.0))  # fmt: skip
    why = larger.run(job, {}, deadline=time.time() + 90)
    assert why == "its pass over every file is slower than the first pass (2.0 min), and 1.5 min are left"


class FakeClock:
    """time.time() for fitting.py, moved on by a second at every training step."""

    def __init__(self):
        self.now = 1000.0

    def time(self):
        return self.now


@pytest.mark.parametrize("min_epochs, planned, slower", [(2, 3, 0), (4, None, 0), (2, 3, 2)])
def test_fit_to_budget_plans_the_epochs_that_fit_or_stops_at_once(tmp_path, monkeypatch, min_epochs, planned, slower):
    clock = FakeClock()
    monkeypatch.setattr(fitting, "time", clock)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    schedule = fitting.WarmupCosine(0.01, 10, 100)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="binary_crossentropy")
    x, y = np.random.default_rng(0).normal(size=(40, 3)), np.random.default_rng(1).integers(0, 2, (40, 1))
    # A second a step; with `slower`, that many more once the first 6 steps have been timed.
    ticks = iter(range(1000))
    tick = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: setattr(clock, "now", clock.now + 1 + slower * (next(ticks) >= 6))
    )
    # 10 steps an epoch at a second each (and no validation): 3 epochs fit in 35 seconds, not 4.
    budget = fitting.FitToBudget(clock.now + 35, schedule, 10, 10, min_epochs, str(tmp_path / "plan.json"), 0.0)
    if planned and slower:  # 18 s for the first epoch (6 steps timed at 1 s, then 3 s): a second would end past 35
        history = model.fit(x, y, batch_size=4, epochs=10, callbacks=[tick, budget], verbose=0)
        assert budget.planned == planned and len(history.history["loss"]) == 1 and clock.now == 1000 + 18
    elif planned:
        history = model.fit(x, y, batch_size=4, epochs=10, callbacks=[tick, budget], verbose=0)
        assert budget.planned == planned and len(history.history["loss"]) == planned and budget.skipped is None
        assert float(schedule.total_steps.numpy()) == 10 * planned  # the cosine ends with the last epoch
        assert json.loads((tmp_path / "plan.json").read_text()) == {"epochs": planned}  # what --resume reads back
    else:
        with pytest.raises(fitting.OutOfBudget, match=r"^4 epoch\(s\) need about 0.7 min; 0.6 min were left for it$"):
            model.fit(x, y, batch_size=4, epochs=10, callbacks=[tick, budget], verbose=0)
        assert clock.now == 1000 + 6 and not (tmp_path / "plan.json").exists()  # stopped after the timed steps


def test_warmup_cosine_warms_up_then_decays_to_zero_at_the_planned_step():
    schedule = fitting.WarmupCosine(0.01, 10, 110)
    rates = [float(schedule(step)) for step in (0, 5, 10, 60, 110, 200)]
    np.testing.assert_allclose(rates, [0.001, 0.0055, 0.01, 0.005, 0.0, 0.0], atol=1e-7)
    schedule.total_steps.assign(60.0)  # FitToBudget shortened the run: the same decay, over fewer steps
    np.testing.assert_allclose(float(schedule(35)), 0.005, atol=1e-7)


@pytest.mark.slow
def test_ctrl_c_mid_fine_tune_then_resume_finishes_and_the_export_labels_alike(tmp_path):
    data_dir, model_dir = tmp_path / "Dataset", tmp_path / "models"
    write_class_tree(data_dir / "Training_Set", ["cats", "dogs"], per_class=20)
    write_class_tree(data_dir / "Predict", ["x", "y"], per_class=4, start_seed=500)
    args = [sys.executable, str(ROOT / "train_cnn.py"), "--data-dir", str(data_dir), "--model-dir", str(model_dir),
            "--recipe", "fine-tune", "--epochs", "10", "--patience", "100", "--image-size", "32",
            "--runtime", "onnx"]  # fmt: skip
    process = _start(args)
    partial = _wait_for_epochs(model_dir, 1, recipe="fine-tune")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "python train_cnn.py --resume --model-dir" in stderr and "Traceback" not in stderr
    done_before = len(partial.read_text().splitlines()) - 1
    assert 1 <= done_before < 10

    result = subprocess.run([*args[:2], "--resume", "--model-dir", str(model_dir)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Kept the efficientnet_lite0 features computed before the interruption (40 files)." in result.stdout
    assert "features: finished before the interruption; its weights are kept." in result.stdout
    # --runtime onnx: the fine-tuned network scores the held-out images on ONNX Runtime, and is model.onnx.
    assert "with the fine-tune network on onnx (exported)" in result.stdout
    history = fitting.read_history(model_dir / "history.csv")
    assert history["epoch"] == list(range(10))  # the fine-tune continued, to the same final count
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["training"]["recipe"] == "fine-tune" and metadata["training"]["peak_learning_rate"] == 3e-4
    assert [row["outcome"] for row in metadata["leaderboard"]] == ["the start of the recipe chosen", "chosen"]

    # The fine-tuned network exports again, and its ONNX file labels as the Keras model does.
    exported = run_script("predict.py", "--model-dir", model_dir, "--export", "onnx")
    assert exported.returncode == 0, exported.stderr
    rows = {}
    for model in ("model.h5", "model.onnx"):
        output = tmp_path / f"{model}.csv"
        labeled = run_script("predict.py", "--model", model_dir / model, "--input", data_dir / "Predict",
                             "--output", output)  # fmt: skip
        assert labeled.returncode == 0, labeled.stderr
        with open(output, newline="") as handle:
            rows[model] = {row["path"]: (row["label"], float(row["confidence"])) for row in csv.DictReader(handle)}
    assert rows["model.h5"].keys() == rows["model.onnx"].keys() and len(rows["model.h5"]) == 8
    for name, (label, confidence) in rows["model.h5"].items():
        assert rows["model.onnx"][name][0] == label and abs(rows["model.onnx"][name][1] - confidence) < 1e-3


def _candidate(name, truth, wrong, loss):
    """A scored candidate that labels the validation images at the indices `wrong` wrong."""
    right = np.ones(len(truth), bool)
    right[list(wrong)] = False
    recalls = [right[truth == label].mean() for label in np.unique(truth)]
    return types.SimpleNamespace(
        recipe=name,
        right=right,
        validation={"accuracy": right.mean(), "balanced_accuracy": np.mean(recalls), "loss": loss},
    )


def test_auto_keeps_the_lower_loss_among_candidates_validation_cannot_tell_apart():
    truth = np.zeros(100, np.int64)
    leader = _candidate("leader", truth, [99], loss=0.05)
    one_image_behind = _candidate("close", truth, [98, 99], loss=0.03)
    assert choice.best([leader, one_image_behind], truth, weighted=False) is one_image_behind
    # Ten images behind, each of them one the leader labels right: clearly worse, whatever its loss.
    far_behind = _candidate("far", truth, range(89, 100), loss=0.01)
    assert choice.best([leader, far_behind], truth, weighted=False) is leader
    # Two of 90 common images wrong, or two of 10 rare ones: the same accuracy, so the loss decides; but with
    # classes weighted (balanced accuracy), a rare image weighs nine times more: the rare ones missed lose.
    truth = np.array([0] * 90 + [1] * 10)
    common_missed = _candidate("common", truth, [0, 1], loss=0.05)
    rare_missed = _candidate("rare", truth, [98, 99], loss=0.01)
    assert choice.best([common_missed, rare_missed], truth, weighted=False) is rare_missed
    assert choice.best([common_missed, rare_missed], truth, weighted=True) is common_missed


def test_a_candidate_leaves_fine_tune_its_estimated_minimum(monkeypatch):
    """scratch's share of the time left stops where fine-tune's two epochs, estimated at the first pass's pace,
    would no longer fit after it; fine-tune already skipped, scratch takes its plain share."""
    now = 1000.0
    monkeypatch.setattr(recipes.time, "time", lambda: now)
    split = types.SimpleNamespace(paths=[None] * 1000, train=range(800), validation=range(200))
    # 0.05 s an image in the first pass, whose runtime is twice Keras's speed: fine-tune's epochs, in Keras, take
    # 2 epochs x 0.1 s x (800 x 2.5 + 200) = 440 s.
    job = types.SimpleNamespace(deadline=now + 600, skipped={}, split=split, decoded=types.SimpleNamespace(seconds=50),
                                keras_slowdown=2.0)  # fmt: skip
    assert recipes._deadline(job, ["scratch", "fine-tune"]) == pytest.approx(now + 600 - 440)
    assert recipes._deadline(job, ["fine-tune"]) == now + 600
    job.skipped["fine-tune"] = "skipped: too long"
    assert recipes._deadline(job, ["scratch", "fine-tune"]) == now + 300
