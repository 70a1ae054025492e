import os

import numpy as np
import pytest

import config
from imgclf import backbones, gradcam, models
from imgclf.cli import UsageError


@pytest.mark.parametrize("name", sorted(models.ARCHITECTURES))
@pytest.mark.parametrize("num_classes", [2, 3])
def test_forward_pass(name, num_classes, monkeypatch):
    if name in backbones.APPLICATIONS:  # Their ImageNet weights need a download: random ones give the same shapes.
        monkeypatch.setattr(
            backbones, "build_backbone", lambda arch, shape, _: backbones.APPLICATIONS[arch](shape, None)
        )
    model = models.build_model(name, 64, num_classes)
    if name in backbones.PRETRAINED:  # Frozen backbone: only the output layer learns.
        assert [weight.name for weight in model.trainable_weights] == ["kernel", "bias"]
    outputs = np.asarray(model(np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")))
    assert outputs.shape == (2, 1 if num_classes == 2 else num_classes)
    assert np.all(np.isfinite(outputs)) and np.all((outputs >= 0) & (outputs <= 1))
    if num_classes > 2:
        np.testing.assert_allclose(outputs.sum(axis=1), 1.0, rtol=1e-5)
    _check_gradcam(model, num_classes)


def _check_gradcam(model, num_classes):
    """Grad-CAM finds a spatial feature map in the network (nested backbones included) and explains each class.

    With one sigmoid unit the two classes' scores are each other's negatives, so wherever one class's
    map is zero the other's is not: in every image one of the two peaks at 1.
    """
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    explainer = gradcam.GradCam(model)
    heatmaps = np.stack([explainer.heatmaps(images, [label] * 2) for label in range(num_classes)])
    assert heatmaps.shape[:2] == (num_classes, 2) and heatmaps.shape[2] > 1 and heatmaps.shape[3] > 1
    assert np.all(np.isfinite(heatmaps)) and heatmaps.min() >= 0 and heatmaps.max() <= 1
    if num_classes == 2:
        assert heatmaps.max(axis=(0, 2, 3)) == pytest.approx([1.0, 1.0])


def test_simple_is_the_classic_network_layer_for_layer():
    model = models.build_model("simple", 64, 2)
    layers = [
        (type(layer).__name__, getattr(layer, "filters", getattr(layer, "units", None))) for layer in model.layers
    ]
    assert layers == [
        ("InputLayer", None),
        ("Rescaling", None),
        ("Conv2D", 32),
        ("MaxPooling2D", None),
        ("Conv2D", 32),
        ("MaxPooling2D", None),
        ("Flatten", None),
        ("Dense", 128),
        ("Dense", 1),
    ]
    conv = model.layers[2]
    assert conv.kernel_size == (3, 3) and conv.activation.__name__ == "relu"
    assert model.layers[-1].activation.__name__ == "sigmoid"
    assert model.count_params() == 813_217  # The classic network's parameter count at 64x64.


def test_default_uses_batch_norm_global_pooling_and_dropout():
    kinds = {type(layer).__name__ for layer in models.build_model("compact", 32, 2).layers}
    assert {"BatchNormalization", "GlobalAveragePooling2D", "Dropout"} <= kinds


def test_the_arch_flag_offers_exactly_the_registered_architectures():
    assert sorted(config.ARCHITECTURES) == sorted(models.ARCHITECTURES) == sorted(models.NATIVE_IMAGE_SIZE)
    assert config.PRETRAINED == list(backbones.PRETRAINED)
    with pytest.raises(UsageError, match=r"`--arch` must be one of efficientnet_lite0, .*, simple\. Received: vgg99"):
        config.TrainConfig(arch="vgg99")


@pytest.mark.parametrize("columns", ["40", None])
def test_summary_text_has_every_column_whatever_the_terminal(monkeypatch, columns):
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)  # a narrow terminal; without it, piped output (80)
    text = models.summary_text(models.build_model("simple", 32, 2))
    assert "Param #" in text and "Output Shape" in text and "(None, 1)" in text
    assert max(map(len, text.splitlines())) == models.SUMMARY_WIDTH
    assert os.environ.get("COLUMNS") == columns
