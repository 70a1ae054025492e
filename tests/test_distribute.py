"""--strategy mirrored and multi-worker, run for real on CPU devices; the cluster flags; the GPU warning."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import ROOT, class_image, write_class_tree

from imgclf import devices, distribute, fitting
from imgclf.cli import UsageError

# Runs train_cnn.py with the CPU split into two logical devices, set before TensorFlow starts.
TWO_CPUS = """
import runpy, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.argv = sys.argv[1:]
sys.path.insert(0, {root!r})
runpy.run_path(sys.argv[0], run_name="__main__")
"""
TINY = ["--epochs", "1", "--image-size", "32", "--batch-size", "8", "--arch", "compact"]


def tiny_dataset(root):
    write_class_tree(root / "Training_Set", ["cats", "dogs"], per_class=24)
    write_class_tree(root / "Validation_Set", ["cats", "dogs"], per_class=10, start_seed=700)
    write_class_tree(root / "Test_Set", ["cats", "dogs"], per_class=10, start_seed=500)
    return root


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def environment():
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    return env


def start_worker(data_dir, model_dir, workers, index, *extra):
    args = [sys.executable, str(ROOT / "train_cnn.py"), "--data-dir", str(data_dir), "--model-dir", str(model_dir),
            "--workers", workers, "--worker-index", str(index), *TINY, *extra]  # fmt: skip
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def start_cluster(data_dir, model_dir, *extra):
    """Starts workers 1 and 0 of a two-worker cluster on free local ports; returns [worker 1, worker 0]."""
    workers = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
    return [start_worker(data_dir, model_dir, workers, index, *extra) for index in (1, 0)]


def finish(processes, timeout=240):
    """Waits for every process (killing all of them on timeout); returns [(returncode, stdout, stderr)]."""
    deadline = time.time() + timeout
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=max(1, deadline - time.time()))
            results.append((process.returncode, stdout, stderr))
    finally:
        for process in processes:
            process.kill()
    return results


@pytest.mark.slow
def test_mirrored_on_two_cpu_devices_trains_saves_and_reloads(tmp_path):
    data_dir = tiny_dataset(tmp_path / "Dataset")
    runs = {}
    for strategy in ("mirrored", "one"):
        model_dir = tmp_path / strategy
        result = subprocess.run(
            [sys.executable, "-c", TWO_CPUS.format(root=str(ROOT)), str(ROOT / "train_cnn.py"),
             "--data-dir", str(data_dir), "--model-dir", str(model_dir), "--strategy", strategy, *TINY],
            capture_output=True, text=True, timeout=240, env=environment(),
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        runs[strategy] = (result.stdout, model_dir)

    stdout, model_dir = runs["mirrored"]
    assert "mirrored over 2 devices (CPU:0, CPU:1)" in stdout
    assert "2 replica(s) x 8 images per step, up to 1 epoch(s), peak learning rate 0.00283" in stdout  # 0.002 * sqrt(2)
    assert "one device" in runs["one"][0] and "1 replica(s) x 8 images per step" in runs["one"][0]
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["training"]["replicas"] == 2
    assert metadata["training"]["epochs_run"] == 1

    images = np.stack([np.asarray(class_image(label, 9000 + label).resize((32, 32))) for label in (0, 1)])
    outputs = {}
    for strategy, (_, directory) in runs.items():
        model = keras.models.load_model(directory / "model.h5", compile=False)
        outputs[strategy] = model.predict(images.astype("float32"), verbose=0)
    assert outputs["mirrored"].shape == outputs["one"].shape == (2, 1)
    assert np.all((outputs["mirrored"] >= 0) & (outputs["mirrored"] <= 1))

    predicted = subprocess.run(
        [sys.executable, str(ROOT / "predict.py"), "--model-dir", str(model_dir),
         "--input", str(data_dir / "Test_Set"), "--output", str(tmp_path / "p.csv"), "--evaluate"],
        capture_output=True, text=True, timeout=120, env=environment(),
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 1 + 20


@pytest.mark.slow
def test_mirrored_trains_the_pretrained_default_and_fine_tunes_it(tmp_path):
    data_dir = tiny_dataset(tmp_path / "Dataset")
    flags = [flag for flag in TINY if flag not in ("--arch", "compact")]
    result = subprocess.run(
        [sys.executable, "-c", TWO_CPUS.format(root=str(ROOT)), str(ROOT / "train_cnn.py"),
         "--data-dir", str(data_dir), "--model-dir", str(tmp_path / "m"), "--strategy", "mirrored", *flags,
         "--recipe", "fine-tune"],
        capture_output=True, text=True, timeout=240, env=environment(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "Computing efficientnet_lite0 features" in result.stdout and "2 replica(s)" in result.stdout
    metadata = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert metadata["architecture"] == "efficientnet_lite0" and metadata["training"]["replicas"] == 2
    # The head on the features, then the whole network fine-tuned, both on the two replicas.
    assert [row["outcome"] for row in metadata["leaderboard"]] == ["the start of the recipe chosen", "chosen"]
    assert metadata["training"]["recipe"] == "fine-tune" and metadata["training"]["epochs_run"] == 1


@pytest.mark.slow
def test_multi_worker_two_processes_fine_tune_one_model_written_by_the_chief(tmp_path):
    data_dir, model_dir = tiny_dataset(tmp_path / "Dataset"), tmp_path / "models"
    processes = start_cluster(
        data_dir, model_dir, "--epochs", "2", "--arch", "efficientnet_lite0", "--recipe", "fine-tune"
    )
    (code1, out1, err1), (code0, out0, err0) = finish(processes)
    assert code0 == 0, out0 + err0[-3000:]
    assert code1 == 0, out1 + err1[-3000:]
    assert "worker 0 of 2 (the chief, writes the model), 2 replicas in all" in out0
    assert "worker 1 of 2 (writes no model files)" in out1 and "the chief writes the model" in out1
    # The head on the features, then the whole network: the workers took the same steps, their logged losses agree.
    assert out0.count("Epoch ") == out1.count("Epoch ") == 2 + 2
    assert [line.split(" - ")[3:5] for line in out0.splitlines() if "val_loss" in line] == [
        line.split(" - ")[3:5] for line in out1.splitlines() if "val_loss" in line
    ]
    # One model, written by the chief; the other worker's folder holds only its resume state.
    assert (model_dir / "model.h5").exists() and (model_dir / "metadata.json").exists()
    written = {path.name for path in (model_dir / "worker-1").rglob("*") if path.is_file()}
    assert not written & {"model.h5", "model.weights.h5", "metadata.json", "report.txt"}
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["devices"].startswith("multi-worker") and metadata["training"]["replicas"] == 2
    assert metadata["training"]["recipe"] == "fine-tune" and metadata["architecture"] == "efficientnet_lite0"
    # 48 training images, 2 x 8 per step: 3 steps per epoch, each worker reading its own half.
    assert "3/3 - " in out0


@pytest.mark.slow
def test_multi_worker_resumes_after_a_worker_is_killed(tmp_path):
    data_dir, model_dir = tiny_dataset(tmp_path / "Dataset"), tmp_path / "models"
    processes = start_cluster(data_dir, model_dir, "--epochs", "5")
    partial = model_dir / "worker-1" / "checkpoints" / "scratch" / "history.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (partial.exists() and len(partial.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    processes[0].kill()  # Worker 1 is lost, as with a crashed machine.
    (_, _, _), (code0, _, err0) = finish(processes, timeout=120)
    assert code0 == 3, err0[-3000:]
    assert "another worker went away" in err0 and "--resume" in err0 and "Traceback" not in err0
    assert not (model_dir / "model.h5").exists()

    processes = start_cluster(data_dir, model_dir, "--epochs", "5", "--resume")
    (code1, out1, err1), (code0, out0, err0) = finish(processes)
    assert code0 == 0 and code1 == 0, out0 + err0[-2000:] + out1 + err1[-2000:]
    assert "Resuming the interrupted run" in out0 and "Resuming the interrupted run" in out1
    history = fitting.read_history(model_dir / "history.csv")
    assert history["epoch"] == [0, 1, 2, 3, 4]  # Continued from the last complete epoch, to the same end.
    assert "Epoch 1/5" not in out0


def test_workers_flag_is_checked():
    with pytest.raises(UsageError, match="`--workers` must be host:port pairs"):
        distribute.cluster_resolver("localhost", 0)
    with pytest.raises(UsageError, match="`--worker-index` 2 is not a position in `--workers` \\(2 workers"):
        distribute.cluster_resolver("a:1,b:2", 2)
    resolver = distribute.cluster_resolver("a:1, b:2", 1)
    assert resolver.cluster_spec().as_dict() == {"worker": ["a:1", "b:2"]} and resolver.task_id == 1


def test_multi_worker_without_a_cluster_says_how_to_give_one(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UsageError, match="no cluster given. Pass --workers"):
        distribute.make_strategy("multi-worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UsageError, match="TF_CONFIG is not valid JSON"):
        distribute.make_strategy("auto")


def test_one_device_by_default_on_this_machine(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribute.make_strategy("auto")
    assert not distribute.is_distributed(strategy) and distribute.is_chief(strategy)
    assert distribute.describe(strategy) == "one device"


def test_learning_rate_follows_the_square_root_rule():
    assert distribute.scaled_learning_rate(0.002, 1) == 0.002
    assert distribute.scaled_learning_rate(0.002, 4) == pytest.approx(0.004)


def test_gpu_present_but_unusable_is_explained():
    assert devices.gpu_warnings(["GPU:0"], nvidia_driver=True, built_with_cuda=True) == []
    assert devices.gpu_warnings([], nvidia_driver=False, built_with_cuda=False) == []  # No GPU: nothing to say.
    (cpu_build,) = devices.gpu_warnings([], nvidia_driver=True, built_with_cuda=False)
    assert "CPU-only build" in cpu_build and "pip install 'tensorflow[and-cuda]" in cpu_build
    (no_cuda,) = devices.gpu_warnings([], nvidia_driver=True, built_with_cuda=True)
    assert "cannot load the CUDA libraries" in no_cuda and "nvidia-smi" in no_cuda
