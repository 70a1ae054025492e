"""The runtimes a network runs on: Keras (TensorFlow), ONNX Runtime, LiteRT; one module each.

A runtime gives a runner: a callable from a batch of images `(n, size, size, 3)` (0-255,
float32 or uint8) to the network's outputs as a NumPy array, with the `input_shape` it
takes. `choose` picks one for `--runtime auto`: on a CPU, ONNX Runtime, the fastest float
runtime measured (bench/predict_throughput.py, bench/RESULTS.md section 16: the same labels
as Keras at 1.9x its rate on the model alone here; LiteRT's float kernels within 3% of it);
on a GPU, TensorFlow.
"""

import ctypes
import gc
import importlib
import os
import shutil
import time

import numpy as np

from imgclf import cli
from imgclf.cli import UsageError
from imgclf.runtimes import keras_model, litert, onnx

RUNTIMES = {module.NAME: module for module in (keras_model, onnx, litert)}
EXPORTED = {module.SUFFIX: module for module in (onnx, litert)}
AUTO = onnx  # on a CPU
# Training exports a network before a pass over images (7 s for Lite0) to gain 4.5 ms (AVX-512) to 20 ms (without)
# an image: with fewer images than this, `auto` keeps it in Keras.
MIN_PASS_IMAGES = 1000
BATCH = 16  # images per call: ONNX Runtime's memory arena grows with it (0.3 GB at 16, 0.9 at 64), not its rate


def is_exported(path):
    """True for a file predict.py runs outside Keras (ONNX or LiteRT)."""
    return path.lower().endswith(tuple(EXPORTED))


def of_file(path):
    """The runtime module that runs an exported file."""
    return EXPORTED[os.path.splitext(path.lower())[1]]


def gpu_present():
    """True when an NVIDIA GPU is here for TensorFlow (its driver, and CUDA_VISIBLE_DEVICES not hiding it); read
    without importing TensorFlow."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1")
    driver = os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None
    return driver and not hidden


def installed(module):
    """True when `module`'s Python package imports (it is imported next anyway)."""
    try:
        importlib.import_module(module.MODULE)
    except ImportError:
        return False
    return True


def choose(requested, keras_needed=None):
    """(runtime module, why) for `--runtime` `requested` (auto, keras, onnx, litert).

    `keras_needed`: why this run needs the Keras model itself (--explain, a model without
    metadata.json), or None. A runtime that is not installed gives way to Keras, with why.
    """
    if requested == "keras":
        return keras_model, "--runtime keras"
    if keras_needed:
        if requested != "auto":
            raise UsageError(f"--runtime {requested}: {keras_needed}. Leave --runtime out, or pass --runtime keras.")
        return keras_model, keras_needed
    module = RUNTIMES[requested] if requested != "auto" else AUTO
    if requested == "auto" and gpu_present():
        return keras_model, "a GPU is here, and TensorFlow runs on it"
    if not installed(module):
        return keras_model, f"{module.MODULE} is not installed (pip install -r requirements.txt brings it)"
    why = f"--runtime {requested}" if requested != "auto" else "the fastest float runtime on CPUs, same labels as Keras"
    return module, why


def exported_runner(path):
    """A runner for an exported `.onnx` (ONNX Runtime) or `.tflite` (LiteRT) file; UsageError if it is not valid."""
    module = of_file(path)
    try:
        return module.load(path)
    except ImportError as error:
        raise UsageError(
            f"{path}: its runtime is not installed ({error}). Run: pip install -r requirements.txt."
        ) from None
    except Exception as error:  # Both runtimes raise their own types for a damaged or foreign file.
        kind = "ONNX" if module is onnx else "LiteRT"
        raise UsageError(
            f"{path}: not a valid {kind} model ({cli.reason(error, first=True)}). Export it again with --export."
        ) from None


def network_runner(network, requested, folder, count, name="backbone"):
    """(runner, runtime module, line) running a network of training (a frozen backbone, or a trained network that
    labels the validation and test images) over `count` images on the runtime `choose` picks: exported into
    `folder` (the run's checkpoints) as `name` and loaded, or Keras when that is the choice, the pass is short, or
    the export fails."""
    import keras

    policy = keras.mixed_precision.global_policy().name  # bfloat16 (on AMX) or float16 (on a GPU): Keras's own
    module, why = choose(requested, None if policy == "float32" else f"training computes in {policy}, in Keras")
    if requested == "auto" and count < MIN_PASS_IMAGES:
        module, why = keras_model, f"{count} images, fewer than the {MIN_PASS_IMAGES} that repay an export"
    if module is not keras_model:
        from imgclf import export

        path = os.path.join(folder, f"{name}{module.SUFFIX}")
        try:
            os.makedirs(folder, exist_ok=True)
            began = time.time()
            release_memory()  # what training freed goes back first: the converter's memory comes on top of the rest
            with cli.native_stderr_silenced():  # The converters log their passes to stderr.
                export.write(export.inference_network(network), module.EXPORT_FORMAT, path)
            run = module.load(path)
            run.export_seconds = time.time() - began
            return run, module, f"{module.NAME} ({why})"
        except Exception as error:  # The converters raise many types; Keras runs any network.
            why = f"the {module.NAME} export failed ({cli.reason(error)})"
    return keras_model.runner(network), keras_model, f"keras ({why})"


def outputs_of(run, inputs, indices, batch=BATCH):
    """`run`'s outputs for the rows `indices` of `inputs` (images or features), in their order, a batch at a time."""
    return np.concatenate([run(inputs[indices[start : start + batch]]) for start in range(0, len(indices), batch)])


def keras_slowdown(backbone, forward, size, batch=16):
    """How many times longer Keras takes than `forward` over `backbone`, timed on one batch each after a warm-up:
    what turns the first pass's pace into the pace of a recipe that trains in Keras."""
    pixels = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    seconds = []
    for run in (keras_model.runner(backbone), forward):
        run(pixels)  # tracing, allocation
        began = time.perf_counter()
        run(pixels)
        seconds.append(time.perf_counter() - began)
    return seconds[0] / seconds[1]


def release_memory():
    """Hands memory that a runtime's session or a converter left behind back to the system (glibc's malloc_trim;
    elsewhere it stays with the process): the training that goes on in the same process has it again."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
