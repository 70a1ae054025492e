"""Model files written by Keras 2 (and 1): read them without Keras 3's loader, which refuses them.

Keras 2 saved an architecture as JSON (list-style Sequential configs, `batch_input_shape`,
old argument names) and weights in HDF5 groups named after the layers. This module
builds the same network from Keras 3 layers, one translator per supported layer type
(nothing in the file is ever executed), and copies each layer's weights by the names
its HDF5 group lists in `weight_names`.
"""

import json

import h5py
import keras
import numpy as np

from imgclf.cli import UsageError


def _common(config):
    return {"name": config["name"], "trainable": config.get("trainable", True)}


def _pair(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def _conv2d(c):
    return keras.layers.Conv2D(
        filters=c.get("filters", c.get("nb_filter")),
        kernel_size=_pair(c["kernel_size"]) if "kernel_size" in c else (c["nb_row"], c["nb_col"]),
        strides=_pair(c.get("strides", c.get("subsample", (1, 1)))),
        padding=c.get("padding", c.get("border_mode", "valid")),
        data_format=_data_format(c),
        dilation_rate=_pair(c.get("dilation_rate", (1, 1))),
        activation=c.get("activation") or "linear",
        use_bias=c.get("use_bias", c.get("bias", True)),
        **_common(c),
    )


def _pooling(layer_class):
    def build(c):
        pool_size = _pair(c.get("pool_size", (2, 2)))
        strides = c.get("strides") or pool_size
        return layer_class(
            pool_size=pool_size,
            strides=_pair(strides),
            padding=c.get("padding", c.get("border_mode", "valid")),
            data_format=_data_format(c),
            **_common(c),
        )

    return build


def _dense(c):
    return keras.layers.Dense(
        units=c.get("units", c.get("output_dim")),
        activation=c.get("activation") or "linear",
        use_bias=c.get("use_bias", c.get("bias", True)),
        **_common(c),
    )


def _batch_norm(c):
    axis = c.get("axis", -1)
    return keras.layers.BatchNormalization(
        axis=axis[0] if isinstance(axis, list) else axis,
        momentum=c.get("momentum", 0.99),
        epsilon=c.get("epsilon", 1e-3),
        center=c.get("center", True),
        scale=c.get("scale", True),
        **_common(c),
    )


def _data_format(c):
    if c.get("data_format", c.get("dim_ordering", "channels_last")) in ("channels_first", "th"):
        raise UsageError(
            f"layer '{c['name']}' uses channels-first data (Theano order), which this loader does not convert."
        )
    return "channels_last"


TRANSLATORS = {
    "Conv2D": _conv2d,
    "Convolution2D": _conv2d,
    "MaxPooling2D": _pooling(keras.layers.MaxPooling2D),
    "AveragePooling2D": _pooling(keras.layers.AveragePooling2D),
    "Flatten": lambda c: keras.layers.Flatten(**_common(c)),
    "Dense": _dense,
    "Dropout": lambda c: keras.layers.Dropout(c.get("rate", c.get("p", 0.5)), **_common(c)),
    "Activation": lambda c: keras.layers.Activation(c["activation"], **_common(c)),
    "BatchNormalization": _batch_norm,
    "GlobalAveragePooling2D": lambda c: keras.layers.GlobalAveragePooling2D(data_format=_data_format(c), **_common(c)),
    "GlobalMaxPooling2D": lambda c: keras.layers.GlobalMaxPooling2D(data_format=_data_format(c), **_common(c)),
    "ZeroPadding2D": lambda c: keras.layers.ZeroPadding2D(
        padding=tuple(_pair(p) for p in c["padding"]) if isinstance(c["padding"], list) else c["padding"],
        data_format=_data_format(c),
        **_common(c),
    ),
    "Add": lambda c: keras.layers.Add(**_common(c)),
    "Concatenate": lambda c: keras.layers.Concatenate(axis=c.get("axis", -1), **_common(c)),
}


def _translate(layer_config):
    kind = layer_config["class_name"]
    name = layer_config["config"].get("name", "?")
    if kind == "Lambda":
        raise UsageError(f"layer '{name}' is a Lambda layer: it holds Python code, which is never run. Refused.")
    if kind not in TRANSLATORS:
        raise UsageError(
            f"layer '{name}' is a {kind}, which this loader does not support. "
            f"Supported: {', '.join(sorted(TRANSLATORS))}."
        )
    return TRANSLATORS[kind](layer_config["config"])


def _input_shape(layer_config, model_name):
    shape = layer_config["config"].get("batch_input_shape") or layer_config["config"].get("batch_shape")
    if not shape:
        raise UsageError(f"model '{model_name}': its first layer declares no input shape (batch_input_shape).")
    return tuple(shape[1:])


def build_model(config):
    """A Keras 3 model equivalent to a Keras 2 `to_json()` / `model_config` architecture."""
    kind = config.get("class_name")
    body = config.get("config")
    if kind == "Sequential":
        layer_configs = body if isinstance(body, list) else body["layers"]
        layer_configs = [layer for layer in layer_configs if layer["class_name"] != "InputLayer"] or layer_configs
        inputs = keras.Input(_input_shape(layer_configs[0], "sequential"))
        x = inputs
        for layer_config in layer_configs:
            x = _translate(layer_config)(x)
        return keras.Model(inputs, x, name=(body.get("name") if isinstance(body, dict) else None) or "keras2_model")
    if kind in ("Model", "Functional"):
        tensors = {}
        for layer_config in body["layers"]:
            name = layer_config["config"]["name"]
            if layer_config["class_name"] == "InputLayer":
                tensors[name] = keras.Input(_input_shape(layer_config, name), name=name)
                continue
            nodes = layer_config["inbound_nodes"]
            if len(nodes) != 1:
                raise UsageError(f"layer '{name}' is used {len(nodes)} times (shared layers are not supported).")
            inbound = [tensors[entry[0]] for entry in nodes[0]]
            tensors[name] = _translate(layer_config)(inbound[0] if len(inbound) == 1 else inbound)
        inputs = [tensors[entry[0]] for entry in body["input_layers"]]
        outputs = [tensors[entry[0]] for entry in body["output_layers"]]
        return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs[0] if len(outputs) == 1 else outputs)
    raise UsageError(f"architecture of class '{kind}' is not supported (only Sequential and simple functional models).")


# Keras 1 named weights W, b; Keras 2 kernel, bias; both name batch-norm weights alike.
_ROLE = {"W": "kernel", "b": "bias", "kernel": "kernel", "bias": "bias", "gamma": "gamma", "beta": "beta",
         "moving_mean": "moving_mean", "moving_variance": "moving_variance", "running_mean": "moving_mean",
         "running_std": "moving_variance", "depthwise_kernel": "depthwise_kernel"}  # fmt: skip


def _role(weight_name):
    last = weight_name.rsplit("/", 1)[-1].split(":")[0]
    for suffix, role in _ROLE.items():
        if last == suffix or last.endswith("_" + suffix):
            return role
    return last


def load_weights(model, group, source):
    """Sets every layer's weights from the HDF5 group of the same name, matched by its `weight_names`."""
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in group:
            raise UsageError(f"{source}: holds no weights for layer '{layer.name}'. Is it the matching weights file?")
        layer_group = group[layer.name]
        names = [n.decode() if isinstance(n, bytes) else n for n in layer_group.attrs.get("weight_names", [])]
        stored = {_role(name): np.asarray(layer_group[name]) for name in names}
        values = []
        for variable in layer.weights:
            role = variable.path.rsplit("/", 1)[-1]
            if role not in stored or tuple(stored[role].shape) != tuple(variable.shape):
                found = {k: v.shape for k, v in stored.items()}
                raise UsageError(
                    f"{source}: layer '{layer.name}' needs {role} {tuple(variable.shape)}, the file has {found}."
                )
            values.append(stored[role])
        layer.set_weights(values)


def is_legacy_file(path):
    """True for a Keras 1/2 HDF5 model or weights file, or an architecture JSON file."""
    if str(path).lower().endswith(".json"):
        return True
    try:
        with h5py.File(path, "r") as handle:
            version = handle.attrs.get("keras_version", b"")
    except OSError:
        return False
    version = version.decode() if isinstance(version, bytes) else str(version)
    return version.startswith(("1.", "2."))


def load(model_path, weights_path=None, rescale=1 / 255):
    """Builds and fills a Keras 3 model from a Keras 2 full-model `.h5`, or an architecture JSON plus weights.

    The returned model takes 0-255 pixel values like the product's own models: the
    scaling the old tutorials did in their generator (`rescale`, 1/255) is its first layer.
    """
    try:
        if str(model_path).lower().endswith(".json"):
            if not weights_path:
                raise UsageError(f"--model {model_path}: an architecture JSON needs --weights WEIGHTS.h5 as well.")
            with open(model_path, encoding="utf-8") as handle:
                config = json.load(handle)
            with h5py.File(weights_path, "r") as handle:
                core = build_model(config)
                load_weights(core, handle["model_weights"] if "model_weights" in handle else handle, weights_path)
        else:
            with h5py.File(model_path, "r") as handle:
                raw = handle.attrs.get("model_config")
                if raw is None:
                    raise UsageError(
                        f"--model {model_path}: a weights-only file. Pass the architecture JSON as --model "
                        "and this file as --weights."
                    )
                config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
                core = build_model(config)
                load_weights(core, handle["model_weights"], model_path)
    except (OSError, KeyError, ValueError) as error:
        raise UsageError(f"{model_path}: not a valid Keras 2 model file ({error}).") from None
    inputs = keras.Input(core.input_shape[1:])
    outputs = core(keras.layers.Rescaling(rescale, name="tutorial_rescaling")(inputs))
    return keras.Model(inputs, outputs, name="keras2_import")
