"""The architectures, as small builder functions in a registry.

Every model takes raw pixel values (0-255, float32) and preprocesses them itself,
so prediction cannot drift from training; its output layer follows the rule in
`imgclf/outputs.py`. Pretrained architectures are a frozen ImageNet backbone
(`imgclf/backbones.py`) followed by a head (dropout and the output layer), the
only part training changes.
"""

import math
import os

import keras
from keras import layers

from imgclf import backbones, outputs


def _classifier(x, num_classes):
    # float32 output even under mixed precision, so probabilities stay exact.
    return layers.Dense(
        outputs.units(num_classes), activation=outputs.activation(num_classes), dtype="float32", name="predictions"
    )(x)


def build_simple(input_shape, num_classes):
    """The classic tutorial network: two Conv2D(32)+MaxPool stages, Flatten, Dense(128), Dense(1, sigmoid)."""
    inputs = keras.Input(shape=input_shape)
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(32, (3, 3), activation="relu")(x)
    x = layers.MaxPooling2D(pool_size=(2, 2))(x)
    x = layers.Conv2D(32, (3, 3), activation="relu")(x)
    x = layers.MaxPooling2D(pool_size=(2, 2))(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    return keras.Model(inputs, _classifier(x, num_classes), name="simple")


def _batch_norm(x):
    # Momentum 0.9, not 0.99: small datasets give few steps, and the moving
    # statistics used at prediction time must settle within the first epochs.
    return layers.BatchNormalization(momentum=0.9)(x)


def _conv_bn(x, filters, strides=1):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    x = _batch_norm(x)
    return layers.ReLU()(x)


def build_compact(input_shape, num_classes, widths=(32, 64, 128, 256), dropout=0.3):
    """A small residual network: strided stem, four stages of two conv+batch-norm layers, global pooling, dropout."""
    inputs = keras.Input(shape=input_shape)
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = _conv_bn(x, widths[0], strides=2)
    for stage, filters in enumerate(widths):
        if stage > 0:
            x = layers.MaxPooling2D(2)(x)
        shortcut = x if x.shape[-1] == filters else layers.Conv2D(filters, 1, use_bias=False)(x)
        x = _conv_bn(x, filters)
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = _batch_norm(x)
        x = layers.ReLU()(layers.Add()([x, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _classifier(x, num_classes), name="compact")


def _pretrained(name):
    def build(input_shape, num_classes, backbone_weights=None, dropout=0.2):
        backbone = backbones.build_backbone(name, input_shape, backbone_weights)
        backbone.trainable = False
        inputs = keras.Input(shape=input_shape)
        x = layers.Dropout(dropout, name="head_dropout")(backbone(inputs))
        return keras.Model(inputs, _classifier(x, num_classes), name=name)

    build.__doc__ = f"The ImageNet-pretrained {name}, frozen, followed by dropout and the output layer."
    return build


ARCHITECTURES = {
    "compact": build_compact,
    "simple": build_simple,
    **{name: _pretrained(name) for name in backbones.PRETRAINED},
}
# The image size each architecture was designed for, used when --image-size is not given.
NATIVE_IMAGE_SIZE = {
    "compact": 96,
    "simple": 64,
    **{name: 224 for name in backbones.APPLICATIONS},
    **{name: lite.image_size for name, lite in backbones.LITES.items()},  # 224, 240, 260
}


EPOCHS = 14
# A frozen backbone's head trains on features in about 0.1 s per epoch; with few photos an
# epoch is one or two steps, so it gets at least this many (20 photos per class: 150 epochs).
HEAD_MIN_STEPS = 300


def is_pretrained(name):
    """True for an architecture that starts from ImageNet weights (a frozen backbone and a head)."""
    return name in backbones.PRETRAINED


def is_depthwise(name):
    """True for an architecture built of depthwise convolutions (its arithmetic: `devices.precision_choice`)."""
    return name in backbones.DEPTHWISE


def default_epochs(name, steps_per_epoch):
    """Epochs when --epochs is not given: 14, and for a pretrained network at least HEAD_MIN_STEPS steps."""
    if name in backbones.PRETRAINED:
        return max(EPOCHS, math.ceil(HEAD_MIN_STEPS / steps_per_epoch))
    return EPOCHS


def build_model(name, image_size, num_classes, backbone_weights=None):
    """Builds the registered architecture `name` for square RGB images of `image_size` pixels."""
    build = ARCHITECTURES[name]
    extra = {"backbone_weights": backbone_weights} if name in backbones.PRETRAINED else {}
    return build((image_size, image_size, 3), num_classes, **extra)


def backbone(model):
    """The pretrained backbone of a model built by `_pretrained` (its layer after the input), or None."""
    layer = model.layers[1] if len(model.layers) > 1 else None
    return layer if isinstance(layer, keras.Model) else None


def backbone_and_head(model):
    """(frozen backbone, head) of a pretrained model, or None for a network trained whole.

    The head is a model of its own from the backbone's features to the output,
    made of the very layers of `model`, so training it trains `model`.
    """
    frozen = backbone(model)
    if frozen is None or frozen.trainable:
        return None
    features = keras.Input(shape=frozen.output.shape[1:], name="features")
    x = features
    for layer in model.layers[2:]:
        x = layer(x)
    return frozen, keras.Model(features, x, name=f"{model.name}_head")


def with_new_output(model, num_classes):
    """`model` (trained earlier) for `num_classes` classes: its body kept, a new output layer in place of its own."""
    body = model.get_layer("predictions").input
    return keras.Model(model.inputs, _classifier(body, num_classes), name=model.name)


SUMMARY_WIDTH = 110  # characters: every column of Keras's summary table, whatever the terminal's width


def summary_text(model, width=SUMMARY_WIDTH):
    """`model.summary()` as text at a fixed width: Keras draws it with rich, which otherwise takes the width of
    the terminal (or 80 when piped) and cuts off the columns that do not fit."""
    lines = []
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)  # rich reads the console width from COLUMNS first.
    try:
        model.summary(line_length=width, print_fn=lambda line, *args, **kwargs: lines.append(line))
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return "\n".join(lines) + "\n"
