"""Grad-CAM: where in an image the network looked when it chose a class.

The heat map is the network's last convolutional feature map, each channel
weighted by the mean gradient of the class's score (its logit, before the
sigmoid or softmax, which would flatten the gradients of a confident answer)
over that channel, kept where positive and scaled to 0-1 (Selvaraju et al., 2017).

It works for every network here and for Keras 2 files: a plain stack of layers,
a graph with its convolutions at the top level (the residual `compact`), and a
pretrained backbone nested inside the classifier. The nested case is where the
usual recipe, `keras.Model(model.inputs, [nested_layer.output, model.output])`,
fails with "Graph disconnected": here the nested model is instead called as a
model of its own that returns both its feature map and its output, and the
layers around it are applied in turn.
"""

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from imgclf import tta
from imgclf.cli import UsageError

OVERLAY_OPACITY = 0.45


class GradCam:
    """Grad-CAM heat maps of a Keras classifier (which takes 0-255 pixels, as every model here does)."""

    def __init__(self, model):
        model = tta.unwrap(model)  # The network itself: a map of where it looked in the picture as given.
        self.model = model
        self._feature_layer = _last_feature_layer(model)
        if self._feature_layer is None:
            raise UsageError(f"Grad-CAM: the network '{model.name}' has no convolutional feature map to explain.")
        self._parts = {}  # sub-models built once: {nested model or model: keras.Model returning two tensors}
        self._compute = tf.function(self._heatmaps, reduce_retracing=True)

    def heatmaps(self, images, classes):
        """Heat maps `(n, height, width)` in 0-1, at the feature map's resolution (7x7 for a 224 px backbone).

        Args:
            images: `(n, size, size, 3)` pixels, 0-255.
            classes: the class index to explain for each image (usually the one chosen).
        """
        images = np.asarray(images, np.float32)
        return np.asarray(self._compute(images, np.asarray(classes, np.int32)))

    def _heatmaps(self, images, classes):
        with tf.GradientTape() as tape:
            feature_map, logits = self._feature_map_and_logits(self.model, images, top=True)
            if logits.shape[-1] == 1:  # one sigmoid unit: the logit of class 1, its negative for class 0
                scores = logits[:, 0] * tf.cast(2 * classes - 1, logits.dtype)
            else:
                scores = tf.gather(logits, classes, axis=1, batch_dims=1)
        gradients = tape.gradient(scores, feature_map)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        maps = tf.nn.relu(tf.reduce_sum(weights * feature_map, axis=-1))
        peak = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
        return tf.math.divide_no_nan(maps, peak)

    def _feature_map_and_logits(self, model, x, top):
        """(last feature map, output) of `model` on `x` in one forward pass; the logits when `top`."""
        holder = _holder(model, self._feature_layer)
        last = model.layers[-1]
        if isinstance(holder, keras.Model):  # A nested network holds the feature map: walk the layers in turn.
            feature_map = None
            for layer in model.layers:
                if isinstance(layer, keras.layers.InputLayer):
                    continue
                if layer is holder:
                    feature_map, x = self._feature_map_and_logits(layer, x, top=False)
                elif top and layer is last:
                    x = _logits(layer, x)
                else:
                    x = layer(x, training=False)
            return feature_map, x
        if model not in self._parts:
            wanted = last.input if top and _ends_in_probabilities(last) else model.outputs[0]
            self._parts[model] = keras.Model(model.inputs, [holder.output, wanted])
        feature_map, x = self._parts[model](x, training=False)
        return feature_map, _logits(last, x) if top and _ends_in_probabilities(last) else x


def overlay(image, heatmap, opacity=OVERLAY_OPACITY):
    """`image` (uint8, h x w x 3) with `heatmap` (0-1, any resolution) laid over it in the "jet" colours."""
    from matplotlib import colormaps

    height, width = image.shape[:2]
    heat = Image.fromarray(np.uint8(np.clip(heatmap, 0, 1) * 255)).resize((width, height), Image.Resampling.BILINEAR)
    colours = colormaps["jet"](np.asarray(heat) / 255.0)[..., :3] * 255
    return np.uint8(np.clip((1 - opacity) * image + opacity * colours, 0, 255))


def _last_feature_layer(model):
    """The last layer with a spatial output (height and width above 1), searched into nested models too."""
    for layer in reversed(model.layers):
        if isinstance(layer, keras.Model):
            found = _last_feature_layer(layer)
            if found is not None:
                return found
        elif not isinstance(layer, keras.layers.InputLayer) and _is_spatial(layer):
            return layer
    return None


def _is_spatial(layer):
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):  # used more than once: no single output
        return False
    return len(shape) == 4 and (shape[1] or 2) > 1 and (shape[2] or 2) > 1


def _holder(model, feature_layer):
    """The top-level layer of `model` that is `feature_layer` or a nested model containing it."""
    for layer in model.layers:
        if layer is feature_layer or (isinstance(layer, keras.Model) and _contains(layer, feature_layer)):
            return layer
    raise AssertionError("the feature layer is in the model")


def _contains(model, target):
    return any(
        layer is target or (isinstance(layer, keras.Model) and _contains(layer, target)) for layer in model.layers
    )


def _ends_in_probabilities(layer):
    """True for a Dense or Activation layer with a sigmoid or softmax."""
    return getattr(layer, "activation", None) in (keras.activations.sigmoid, keras.activations.softmax)


def _logits(layer, x):
    """The output layer's result before its sigmoid or softmax."""
    if isinstance(layer, keras.layers.Activation):
        return x
    if isinstance(layer, keras.layers.Dense) and _ends_in_probabilities(layer):
        logits = keras.ops.matmul(x, layer.kernel)
        return logits + layer.bias if layer.use_bias else logits
    return layer(x, training=False)


def save_overlay(pixels, caption, path):
    """Writes `pixels` as a PNG with `caption` (the label and confidence) on a strip above it."""
    from PIL import ImageDraw, ImageFont

    height, width = pixels.shape[:2]
    strip = 22
    canvas = Image.new("RGB", (width, height + strip), "white")
    canvas.paste(Image.fromarray(pixels), (0, strip))
    ImageDraw.Draw(canvas).text((6, 3), caption, fill="black", font=ImageFont.load_default(size=15))
    canvas.save(path, format="PNG")
