"""Keras on TensorFlow: the model as trained, on every device TensorFlow sees (GPUs included)."""

import numpy as np

NAME = "keras"
MODULE = "tensorflow"


def runner(model):
    """A runner for a Keras model: one compiled call per batch (a float32 NumPy batch: an eager uint8 tensor made
    the network half as fast, measured on TF 2.21's CPU kernels)."""
    import tensorflow as tf

    forward = tf.function(lambda pixels: model(pixels, training=False), reduce_retracing=True)

    def run(images):
        return np.asarray(forward(np.asarray(images, np.float32)), np.float32)

    run.input_shape = list(model.input_shape)
    return run
