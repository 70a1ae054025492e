"""Keras 2 files, written here with h5py as Keras 2.1 wrote them, load and give the same outputs as Keras 3."""

import json

import h5py
import keras
import numpy as np
import pytest
from conftest import class_image, run_script

from imgclf import artifacts, legacy
from imgclf.cli import UsageError

SIZE = 24


def _k2_layer(kind, name, first=False, **config):
    """One layer entry as Keras 2.1's to_json() wrote it."""
    entry = {"name": name, "trainable": True, "dtype": "float32", **config}
    if first:
        entry["batch_input_shape"] = [None, SIZE, SIZE, 3]
    return {"class_name": kind, "config": entry}


def _classic_layers():
    """The tutorial network, in Keras 2.1 spelling, with Keras 3 twins and the weights to give both."""
    rng = np.random.default_rng(0)
    conv = dict(kernel_size=[3, 3], strides=[1, 1], padding="valid", data_format="channels_last",
                dilation_rate=[1, 1], activation="relu", use_bias=True,
                kernel_initializer={"class_name": "VarianceScaling", "config": {"scale": 1.0}})  # fmt: skip
    pool = dict(pool_size=[2, 2], padding="valid", strides=[2, 2], data_format="channels_last")
    specs = [
        _k2_layer("Conv2D", "conv2d_7", first=True, filters=8, **conv),
        _k2_layer("MaxPooling2D", "max_pooling2d_7", **pool),
        _k2_layer("Conv2D", "conv2d_8", filters=8, **conv),
        _k2_layer("MaxPooling2D", "max_pooling2d_8", **pool),
        _k2_layer("Flatten", "flatten_3"),
        _k2_layer("Dense", "dense_5", units=16, activation="relu", use_bias=True),
        _k2_layer("Dropout", "dropout_3", rate=0.5),
        _k2_layer("Dense", "dense_6", units=1, activation="sigmoid", use_bias=True),
    ]
    weights = {
        "conv2d_7": [rng.normal(0, 0.3, (3, 3, 3, 8)), rng.normal(0, 0.1, 8)],
        "conv2d_8": [rng.normal(0, 0.3, (3, 3, 8, 8)), rng.normal(0, 0.1, 8)],
        "dense_5": [rng.normal(0, 0.1, (128, 16)), rng.normal(0, 0.1, 16)],
        "dense_6": [rng.normal(0, 0.3, (16, 1)), rng.normal(0, 0.1, 1)],
    }
    twin = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(16, activation="relu"), keras.layers.Dropout(0.5),
        keras.layers.Dense(1, activation="sigmoid"),
    ])  # fmt: skip
    twin.set_weights([w.astype(np.float32) for name in weights for w in weights[name]])
    return specs, weights, twin


def _write_weights(group, layer_names, weights, roles=("kernel", "bias")):
    """Layer groups as Keras 2 wrote them: inner names from an older numbering (conv2d_7/conv2d_6/kernel:0)."""
    group.attrs["layer_names"] = np.array([n.encode() for n in layer_names])
    for index, name in enumerate(layer_names):
        layer_group = group.create_group(name)
        inner = f"{name.rsplit('_', 1)[0]}_{index + 100}"  # A different name inside, as re-built models had.
        layer_roles = roles.get(name, ("kernel", "bias")) if isinstance(roles, dict) else roles
        names = [f"{inner}/{role}:0" for role in layer_roles][: len(weights.get(name, []))]
        layer_group.attrs["weight_names"] = np.array([n.encode() for n in names])
        for weight_name, value in zip(names, weights.get(name, [])):
            layer_group.create_dataset(weight_name, data=np.asarray(value, np.float32))


def _images():
    return np.stack([np.asarray(class_image(i % 2, i, size=SIZE), np.float32) for i in range(6)])


def test_json_plus_weights_gives_the_same_outputs_as_keras_3(tmp_path):
    specs, weights, twin = _classic_layers()
    config = {"class_name": "Sequential", "config": specs, "keras_version": "2.1.2-tf", "backend": "tensorflow"}
    (tmp_path / "model.json").write_text(json.dumps(config))
    with h5py.File(tmp_path / "weights.h5", "w") as handle:
        handle.attrs["keras_version"], handle.attrs["backend"] = b"2.1.2-tf", b"tensorflow"
        _write_weights(handle, [s["config"]["name"] for s in specs], weights)
    model = legacy.load(tmp_path / "model.json", tmp_path / "weights.h5")
    np.testing.assert_allclose(np.asarray(model(_images())), np.asarray(twin(_images())), rtol=1e-5, atol=1e-6)
    assert legacy.is_legacy_file(tmp_path / "model.json") and legacy.is_legacy_file(tmp_path / "weights.h5")


def _write_full_model(path, config, layer_names, weights, roles=("kernel", "bias")):
    with h5py.File(path, "w") as handle:
        handle.attrs["keras_version"], handle.attrs["backend"] = b"2.2.4", b"tensorflow"
        handle.attrs["model_config"] = json.dumps(config).encode()
        _write_weights(handle.create_group("model_weights"), layer_names, weights, roles)


def test_full_model_h5_with_batch_norm_and_functional_layers(tmp_path):
    rng = np.random.default_rng(1)
    layers = [
        ("InputLayer", "input_1", {"batch_input_shape": [None, SIZE, SIZE, 3]}, []),
        ("ZeroPadding2D", "zero_padding2d_1", {"padding": [[1, 1], [1, 1]]}, ["input_1"]),
        ("Conv2D", "conv2d_1", {"filters": 4, "kernel_size": [3, 3], "use_bias": False, "padding": "valid",
                                "strides": [1, 1], "activation": "linear"}, ["zero_padding2d_1"]),
        ("BatchNormalization", "bn_1", {"axis": -1, "momentum": 0.99, "epsilon": 0.001}, ["conv2d_1"]),
        ("Activation", "activation_1", {"activation": "relu"}, ["bn_1"]),
        ("AveragePooling2D", "average_pooling2d_1", {"pool_size": [2, 2], "strides": None}, ["activation_1"]),
        ("GlobalMaxPooling2D", "global_max_pooling2d_1", {"data_format": "channels_last"}, ["average_pooling2d_1"]),
        ("Dense", "dense_1", {"units": 3, "activation": "softmax"}, ["global_max_pooling2d_1"]),
    ]  # fmt: skip
    config = {"class_name": "Model", "config": {
        "name": "model_1",
        "layers": [{"class_name": kind, "name": name, "config": {"name": name, **cfg},
                    "inbound_nodes": [[[source, 0, 0, {}] for source in sources]] if sources else []}
                   for kind, name, cfg, sources in layers],
        "input_layers": [["input_1", 0, 0]], "output_layers": [["dense_1", 0, 0]]}}  # fmt: skip
    weights = {
        "conv2d_1": [rng.normal(0, 0.3, (3, 3, 3, 4))],
        "bn_1": [rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.1, 4), rng.normal(0, 0.1, 4), rng.uniform(0.5, 2, 4)],
        "dense_1": [rng.normal(0, 0.5, (4, 3)), rng.normal(0, 0.1, 3)],
    }
    path = tmp_path / "old.h5"
    bn_roles = ("gamma", "beta", "moving_mean", "moving_variance")
    _write_full_model(path, config, [name for _, name, _, _ in layers], weights, roles={"bn_1": bn_roles})
    twin_in = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(twin_in)
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.Conv2D(4, 3, use_bias=False)(x)
    x = keras.layers.BatchNormalization(epsilon=0.001)(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    twin = keras.Model(twin_in, keras.layers.Dense(3, activation="softmax")(x))
    twin.set_weights([np.asarray(w, np.float32) for name in ("conv2d_1", "bn_1", "dense_1") for w in weights[name]])
    model = legacy.load(path)
    np.testing.assert_allclose(np.asarray(model(_images())), np.asarray(twin(_images())), rtol=1e-5, atol=1e-6)
    assert artifacts.metadata_for(model, None, path)["class_names"] == ["class_0", "class_1", "class_2"]


def test_keras_1_spellings_and_w_b_weight_names(tmp_path):
    rng = np.random.default_rng(2)
    specs = [
        _k2_layer("Convolution2D", "convolution2d_1", first=True, nb_filter=4, nb_row=3, nb_col=3,
                  border_mode="same", subsample=[1, 1], activation="relu", bias=True, dim_ordering="tf"),
        _k2_layer("Flatten", "flatten_1"),
        _k2_layer("Dense", "dense_1", output_dim=1, activation="sigmoid", bias=True),
    ]  # fmt: skip
    weights = {"convolution2d_1": [rng.normal(0, 0.3, (3, 3, 3, 4)), rng.normal(0, 0.1, 4)],
               "dense_1": [rng.normal(0, 0.01, (SIZE * SIZE * 4, 1)), rng.normal(0, 0.1, 1)]}  # fmt: skip
    config = {"class_name": "Sequential", "config": specs}
    _write_full_model(tmp_path / "k1.h5", config, ["convolution2d_1", "flatten_1", "dense_1"], weights, ("W", "b"))
    model = legacy.load(tmp_path / "k1.h5")
    twin = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 255),
                             keras.layers.Conv2D(4, 3, padding="same", activation="relu"), keras.layers.Flatten(),
                             keras.layers.Dense(1, activation="sigmoid")])  # fmt: skip
    twin.set_weights([np.asarray(w, np.float32) for name in weights for w in weights[name]])
    np.testing.assert_allclose(np.asarray(model(_images())), np.asarray(twin(_images())), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "layer, message",
    [
        (_k2_layer("Lambda", "lambda_1", function=["4wEAAAAAAAAA", None, None], function_type="lambda"),
         r"layer 'lambda_1' is a Lambda layer: it holds Python code, which is never run\. Refused\."),
        (_k2_layer("LSTM", "lstm_1", units=4),
         r"layer 'lstm_1' is a LSTM, which this loader does not support\. Supported: Activation, Add, "),
    ],
)  # fmt: skip
def test_unsupported_layers_are_named(tmp_path, layer, message):
    specs, weights, _ = _classic_layers()
    config = {"class_name": "Sequential", "config": [*specs[:5], layer, *specs[5:]]}
    _write_full_model(tmp_path / "old.h5", config, [s["config"]["name"] for s in specs], weights)
    with pytest.raises(UsageError, match=message):
        legacy.load(tmp_path / "old.h5")


def test_wrong_weights_file_is_named(tmp_path):
    specs, weights, _ = _classic_layers()
    (tmp_path / "model.json").write_text(json.dumps({"class_name": "Sequential", "config": specs}))
    with h5py.File(tmp_path / "weights.h5", "w") as handle:
        _write_weights(handle, ["conv2d_7"], weights)
    with pytest.raises(UsageError, match=r"weights\.h5: holds no weights for layer 'conv2d_8'"):
        legacy.load(tmp_path / "model.json", tmp_path / "weights.h5")
    with pytest.raises(UsageError, match=r"an architecture JSON needs --weights"):
        legacy.load(tmp_path / "model.json")


def test_convert_round_trip_gives_identical_outputs(tmp_path):
    specs, weights, _ = _classic_layers()
    _write_full_model(tmp_path / "old.h5", {"class_name": "Sequential", "config": specs},
                      [s["config"]["name"] for s in specs], weights)  # fmt: skip
    model = legacy.load(tmp_path / "old.h5")
    metadata = artifacts.metadata_for(model, ["cats", "dogs"], tmp_path / "old.h5")
    artifacts.save_model(model, str(tmp_path / "new"), metadata)
    converted = artifacts.load_model(str(tmp_path / "new" / "model.h5"))
    artifacts.check_matches_metadata(converted, "model.h5", artifacts.read_metadata(str(tmp_path / "new" / "model.h5")))
    np.testing.assert_array_equal(np.asarray(converted(_images())), np.asarray(model(_images())))
    assert not legacy.is_legacy_file(tmp_path / "new" / "model.h5")


@pytest.mark.slow
def test_predict_labels_a_folder_with_an_old_model_and_converts_it(tmp_path):
    specs, weights, twin = _classic_layers()
    _write_full_model(tmp_path / "old.h5", {"class_name": "Sequential", "config": specs},
                      [s["config"]["name"] for s in specs], weights)  # fmt: skip
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        class_image(i % 2, i, size=SIZE).save(folder / f"{i}.png")
    result = run_script("predict.py", "--model", tmp_path / "old.h5", "--classes", "cats,dogs", "--input", folder,
                        "--output", tmp_path / "old.csv", "--mixed-precision", "off")  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = (tmp_path / "old.csv").read_text().splitlines()
    assert rows[0] == "path,label,confidence,prob_cats,prob_dogs,error" and len(rows) == 5
    expected = np.asarray(twin(_images()[:4]))[:, 0]  # Same pixels: PNGs at the input size need no resizing.
    np.testing.assert_allclose([float(r.split(",")[4]) for r in rows[1:]], expected, atol=1e-4)
    result = run_script("predict.py", "--model", tmp_path / "old.h5", "--classes", "cats,dogs",
                        "--convert", tmp_path / "converted")  # fmt: skip
    assert result.returncode == 0 and (tmp_path / "converted" / "metadata.json").exists()
    result = run_script("predict.py", "--model-dir", tmp_path / "converted", "--input", folder,
                        "--output", tmp_path / "new.csv", "--mixed-precision", "off")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "new.csv").read_text() == (tmp_path / "old.csv").read_text()
