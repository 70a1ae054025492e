"""The runtimes predict.py labels with: Keras, ONNX Runtime, LiteRT. Each is a callable
from a batch of uint8 images `(n, size, size, 3)` to per-class probabilities `(n, classes)`.
"""

import os

import numpy as np

from imgclf import cli, outputs
from imgclf.cli import UsageError

EXPORTED_SUFFIXES = (".onnx", ".tflite")


def is_exported(path):
    """True for a file predict.py runs outside Keras (ONNX or LiteRT)."""
    return path.lower().endswith(EXPORTED_SUFFIXES)


def keras_runner(model):
    """Runs a Keras model as one compiled call per batch (float32 input: faster than an eager uint8 tensor)."""
    import tensorflow as tf

    forward = tf.function(lambda pixels: model(pixels, training=False), reduce_retracing=True)

    def run(images):
        return outputs.class_probabilities(np.asarray(forward(np.asarray(images, np.float32)), np.float32))

    return run


def exported_runner(path):
    """A runner for an exported `.onnx` (ONNX Runtime) or `.tflite` (LiteRT) file; UsageError if it is not valid."""
    try:
        if path.lower().endswith(".onnx"):
            return _onnx_runner(path)
        return _litert_runner(path)
    except ImportError as error:
        raise UsageError(
            f"{path}: its runtime is not installed ({error}). Run: pip install -r requirements.txt."
        ) from None
    except Exception as error:  # Both runtimes raise their own types for a damaged or foreign file.
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        kind = "ONNX" if path.lower().endswith(".onnx") else "LiteRT"
        raise UsageError(f"{path}: not a valid {kind} model ({reason}). Export it again with --export.") from None


def _onnx_runner(path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(images):
        return session.run(None, {name: np.asarray(images, np.float32)})[0]

    run.input_shape = session.get_inputs()[0].shape
    return run


def _litert_runner(path):
    from ai_edge_litert.interpreter import Interpreter

    with cli.native_stderr_silenced():  # LiteRT says "INFO: Created TensorFlow Lite XNNPACK delegate" there.
        interpreter = Interpreter(model_path=path, num_threads=os.cpu_count())
    source = interpreter.get_input_details()[0]
    target = interpreter.get_output_details()[0]
    allocated = [None]

    def run(images):
        images = np.asarray(images, np.float32)
        if allocated[0] != images.shape:  # The batch size may change (the last batch): resize once per change.
            interpreter.resize_tensor_input(source["index"], images.shape)
            with cli.native_stderr_silenced():
                interpreter.allocate_tensors()
            allocated[0] = images.shape
        interpreter.set_tensor(source["index"], images)
        interpreter.invoke()
        return interpreter.get_tensor(target["index"]).copy()

    run.input_shape = list(source["shape_signature"])
    return run
