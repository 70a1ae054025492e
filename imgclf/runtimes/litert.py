"""LiteRT (TensorFlow Lite's runtime, `ai-edge-litert`): runs `.tflite` files with its XNNPACK CPU kernels."""

import os

import numpy as np

from imgclf import cli

NAME = "litert"
SUFFIX = ".tflite"
FILE = "model.tflite"
EXPORT_FORMAT = "litert"
MODULE = "ai_edge_litert"


def load(path):
    """A runner for the LiteRT file at `path`: a float32 batch of images -> the network's outputs."""
    from ai_edge_litert.interpreter import Interpreter

    with cli.native_stderr_silenced():  # LiteRT says "INFO: Created TensorFlow Lite XNNPACK delegate" there.
        interpreter = Interpreter(model_path=path, num_threads=os.cpu_count())
    source = interpreter.get_input_details()[0]
    target = interpreter.get_output_details()[0]
    allocated = [None]

    def run(images):
        images = np.ascontiguousarray(images, np.float32)
        if allocated[0] != images.shape:  # The batch size may change (the last batch): resize once per change.
            interpreter.resize_tensor_input(source["index"], images.shape)
            with cli.native_stderr_silenced():
                interpreter.allocate_tensors()
            allocated[0] = images.shape
        interpreter.set_tensor(source["index"], images)
        interpreter.invoke()
        return interpreter.get_tensor(target["index"]).copy()

    run.input_shape, run.path = list(source["shape_signature"]), path
    return run
