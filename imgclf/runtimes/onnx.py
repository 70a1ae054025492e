"""ONNX Runtime: runs `model.onnx` (and training's frozen backbone) on the CPU, without TensorFlow."""

import os

import numpy as np

NAME = "onnx"
SUFFIX = ".onnx"
FILE = "model.onnx"
EXPORT_FORMAT = "onnx"  # `predict.py --export`'s name for the file
MODULE = "onnxruntime"


def load(path):
    """A runner for the ONNX file at `path`: a float32 (or uint8) batch of images -> the network's outputs."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    # One thread per core: the decoding threads run while ONNX Runtime waits between batches.
    options.intra_op_num_threads = os.cpu_count() or 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(images):
        return session.run(None, {name: np.ascontiguousarray(images, np.float32)})[0]

    run.input_shape, run.path = session.get_inputs()[0].shape, path
    return run
