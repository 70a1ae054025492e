"""Grad-CAM: it points at what the network responds to, for flat and nested networks (every registered
architecture gets a heat map in tests/test_models.py, which builds each one anyway; `predict.py --explain`
is tested in tests/test_report_page.py, on its trained model)."""

import keras
import numpy as np
import pytest

from imgclf import gradcam


def red_detector(nested):
    """A network that answers "class 1" for red: a 1x1 convolution (red minus green and blue), ReLU, global
    average pooling, a sigmoid unit. With `nested`, the convolution sits inside a model of its own, as a
    pretrained backbone does."""
    convolution = keras.layers.Conv2D(1, 1, activation="relu", name="red")
    inputs = keras.Input((32, 32, 3))
    if nested:
        inner_inputs = keras.Input((32, 32, 3))
        body = keras.Model(inner_inputs, keras.layers.GlobalAveragePooling2D()(convolution(inner_inputs)))
        x = body(inputs)
    else:
        x = keras.layers.GlobalAveragePooling2D()(convolution(inputs))
    output = keras.layers.Dense(1, activation="sigmoid", name="predictions")
    model = keras.Model(inputs, output(x))
    convolution.set_weights([np.array([1.0, -1.0, -1.0]).reshape(1, 1, 3, 1), np.zeros(1)])
    output.set_weights([np.ones((1, 1)), np.zeros(1)])
    return model


def red_square_images():
    images = np.full((2, 32, 32, 3), 40.0, np.float32)
    images[0, 2:10, 3:11] = (250, 0, 0)  # top left
    images[1, 20:30, 18:28] = (250, 0, 0)  # bottom right
    return images


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested backbone"])
def test_the_heat_is_on_the_red_square(nested):
    heatmaps = gradcam.GradCam(red_detector(nested)).heatmaps(red_square_images(), [1, 1])
    assert heatmaps.shape == (2, 32, 32)
    assert heatmaps[0, 2:10, 3:11].min() == pytest.approx(1.0) and heatmaps[0, 16:, :].max() == 0
    assert heatmaps[1, 20:30, 18:28].min() == pytest.approx(1.0) and heatmaps[1, :16, :].max() == 0
    # For "not red" the network found nothing to point at.
    assert gradcam.GradCam(red_detector(nested)).heatmaps(red_square_images(), [0, 0]).max() == 0


def test_nested_and_flat_networks_give_the_same_heatmaps():
    flat, nested = red_detector(False), red_detector(True)
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(
        gradcam.GradCam(flat).heatmaps(images, [1, 1, 1]),
        gradcam.GradCam(nested).heatmaps(images, [1, 1, 1]),
        atol=1e-6,
    )
