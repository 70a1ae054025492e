import keras
import numpy as np
import pytest

from imgclf import artifacts, devices, models


def test_off_is_float32_and_on_is_mixed_on_cpu():
    assert devices.precision_policy("off") == "float32"
    assert devices.precision_policy("on") == "mixed_bfloat16"  # No GPU in the test environment.
    assert devices.precision_policy("auto") in ("float32", "mixed_bfloat16")


def test_depthwise_networks_stay_float32_unless_asked():
    # bfloat16 slows depthwise convolutions even on AMX: auto keeps EfficientNet-Lite in float32 on every CPU.
    assert devices.precision_policy("auto", depthwise=True) == "float32"
    assert devices.precision_policy("on", depthwise=True) == "mixed_bfloat16"
    assert models.is_depthwise("efficientnet_lite0") and not models.is_depthwise("compact")
    assert devices.has_depthwise(models.build_model("efficientnet_lite0", 32, 2, backbone_weights=None))
    assert not devices.has_depthwise(models.build_model("compact", 32, 2))


@pytest.mark.parametrize("num_classes", [2, 4])
def test_mixed_precision_model_predicts_float32_and_saves_as_float32(num_classes):
    try:
        devices.set_policy("mixed_bfloat16")
        mixed = models.build_model("compact", 32, num_classes)
        assert mixed.layers[3].compute_dtype == "bfloat16"
        batch = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
        outputs = mixed(batch)
        assert outputs.dtype == "float32" and np.all(np.isfinite(np.asarray(outputs)))
        plain = devices.with_policy(mixed, "float32")
    finally:
        devices.set_policy("float32")
    assert all(layer.compute_dtype == "float32" for layer in plain.layers if hasattr(layer, "compute_dtype"))
    np.testing.assert_allclose(np.asarray(plain(batch)), np.asarray(outputs), atol=0.05)
    assert keras.mixed_precision.global_policy().name == "float32"


def test_loaded_model_gets_a_bfloat16_copy_with_float32_outputs(tmp_path):
    model = models.build_model("simple", 32, 3)
    artifacts.save_model(model, str(tmp_path), {"class_names": ["a", "b", "c"]})
    loaded = artifacts.load_model(str(tmp_path / "model.h5"))
    fast = devices.with_policy(loaded, "mixed_bfloat16")
    assert fast is not loaded and fast.layers[-1].compute_dtype == "float32"
    assert fast.layers[2].compute_dtype == "bfloat16"
    batch = np.random.default_rng(2).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(fast(batch)), np.asarray(loaded(batch)), atol=0.02)
    assert devices.with_policy(loaded, "float32") is loaded
