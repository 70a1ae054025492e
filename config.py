"""Every default of the product, in one place.

Each field of `TrainConfig` and `PredictConfig` is one command-line flag of
`train_cnn.py` or `predict.py` (`image_size` becomes `--image-size`); the
help text, the allowed range and the default all live on the field.
"""

import argparse
import dataclasses
import os
import sys
import typing

from imgclf.cli import UsageError

# The registered architectures (`imgclf/models.py` builds them); listed here so that a
# wrong --arch is refused before TensorFlow is imported. The first eight start from ImageNet weights.
PRETRAINED = [
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_v2_b0",
    "resnet50",
    "vgg16",
]
ARCHITECTURES = [*PRETRAINED, "compact", "simple"]
RECIPES = ["auto", "features", "fine-tune", "scratch"]  # `imgclf/recipes/` runs them
TTA_MODES = ["auto", "flip", "none"]  # `imgclf/tta.py`


def setting(default, help, *, low=None, high=None, choices=None, nargs=None, kind=None, shown=None):
    """Declares one setting: its default, its help line and what values it allows.

    `kind` is the value type where the field's type cannot say it (a default of None);
    `shown` is how --help writes the default when it says more than the value itself.
    """
    metadata = {
        "help": help,
        "low": low,
        "high": high,
        "choices": choices,
        "nargs": nargs,
        "kind": kind,
        "shown": shown,
    }
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class _Checked:
    """Validation happens once, where a configuration is made: from flags, in Python, or by dataclasses.replace."""

    def __post_init__(self):
        check(self)


@dataclasses.dataclass
class TrainConfig(_Checked):
    # --arch when it is not given (None: "not given", so that --init-from can tell a clash from a default).
    DEFAULT_ARCH: typing.ClassVar[str] = "efficientnet_lite0"

    data_dir: str = setting(
        "Dataset", "folder holding Training_Set/<class>/ and optionally Validation_Set/<class>/ and Test_Set/<class>/"
    )
    model_dir: str = setting("models", "folder the model and its reports are written to")
    arch: str | None = setting(
        None,
        "network: efficientnet_lite0, _lite1 or _lite2 (ImageNet weights, installed; larger and slower in that "
        "order) or another pretrained one (weights downloaded once by Keras), compact (trained from scratch) or "
        "simple (the classic tutorial network)",
        choices=ARCHITECTURES,
        kind=str,
        shown="efficientnet_lite0 (compact with --recipe scratch); with --init-from the earlier model's",
    )
    recipe: str = setting(
        "auto",
        "how to train: features (a pretrained --arch frozen, a head trained on its features: seconds), fine-tune "
        "(then the whole network, on augmented images), scratch (the compact network from random weights) or auto "
        "(tries them cheapest first within --time-budget, then EfficientNet-Lite2's features on the time left, and "
        "keeps the best on the validation images)",
        choices=RECIPES,
    )
    time_budget: float = setting(
        10.0,
        "minutes training may take: a recipe's epochs are fitted to what is left, and auto skips a candidate that "
        "does not fit; 0 for no limit",
        low=0.0,
        high=100000.0,
    )
    tta: str = setting(
        "auto",
        "test-time flip built into the saved model (each picture and its mirror image labeled, the answers "
        "averaged; twice the model's work): auto keeps it when it labels more validation images right, never "
        "for grey pictures; flip always; none never",
        choices=TTA_MODES,
    )
    image_size: int | None = setting(
        None,
        "images are resized to this many pixels square",
        low=16,
        high=1024,
        kind=int,
        shown="the architecture's own: 224 pretrained, 96 compact, 64 simple; with --init-from the earlier model's",
    )
    backbone_weights: str = setting(
        "", "pretrained architectures: a weights file to use instead of the ImageNet weights Keras downloads"
    )
    init_from: str = setting(
        "", "start from the model in this folder (trained here earlier); other classes get a new output layer"
    )
    epochs: int | None = setting(
        None,
        "maximum passes over the training images, for every recipe",
        low=1,
        high=10000,
        kind=int,
        shown="a head on features: 14 and at least 300 steps; scratch 14; fine-tune 10",
    )
    batch_size: int = setting(
        32, "images per training step on each device (the learning rate follows, see README)", low=1, high=4096
    )
    learning_rate: float = setting(
        0.002, "peak learning rate on one device (N devices: times sqrt(N))", low=1e-7, high=1.0
    )
    class_weight: str = setting(
        "auto",
        "weight each class's loss by its inverse frequency: auto (when the largest class has 1.5x the images of "
        "the smallest) or none",
        choices=["auto", "none"],
    )
    validation_split: float = setting(
        0.2,
        "share of Training_Set held out to choose the best epoch and the threshold when there is no Validation_Set/ "
        "(with --test-split: a share of what the test share leaves)",
        low=0.01,
        high=0.9,
    )
    test_split: float = setting(
        0.0,
        "without a Test_Set/: share of Training_Set held out (stratified, seeded) and scored once at the end",
        low=0.0,
        high=0.9,
    )
    patience: int = setting(8, "stop after this many epochs without a better validation loss", low=1, high=10000)
    threshold: str = setting(
        "auto",
        "two classes: probability of the second class from which it is chosen: auto (the one that maximizes "
        "balanced accuracy on the validation images) or a number from 0 to 1",
    )
    target_recall: str = setting(
        "", "two classes: CLASS=R chooses the highest threshold keeping CLASS's validation recall >= R, e.g. Dogs=0.95"
    )
    seed: int = setting(1337, "seed for the validation split, shuffling, augmentation and initial weights", low=0)
    mixed_precision: str = setting(
        "auto",
        "auto (float16 on GPUs with tensor cores; bfloat16 on CPUs with AMX for networks of plain convolutions, "
        "not for the depthwise ones of EfficientNet and MobileNet, which it slows; else float32), on or off",
        choices=["auto", "on", "off"],
    )
    runtime: str = setting(
        "auto",
        "runtime of the frozen backbone's pass over every image: auto (ONNX Runtime on CPUs, where it is fastest; "
        "TensorFlow on GPUs), keras, onnx or litert",
        choices=["auto", "keras", "onnx", "litert"],
    )
    jit: str = setting(
        "auto",
        "compile training steps with XLA: auto (on GPUs, where it is faster), on or off",
        choices=["auto", "on", "off"],
    )
    strategy: str = setting(
        "auto",
        "devices to train on: auto (multi-worker with a cluster, mirrored with several GPUs, else one), "
        "one, mirrored (every local GPU) or multi-worker",
        choices=["auto", "one", "mirrored", "multi-worker"],
    )
    workers: str = setting(
        "", "multi-worker: every worker's host:port, comma-separated, the chief first", shown="read TF_CONFIG"
    )
    worker_index: int = setting(
        0, "multi-worker with --workers: this machine's position in that list (0: chief)", low=0
    )
    resume: bool = setting(False, "continue the run interrupted in --model-dir (Ctrl-C) with its own settings")
    strict: bool = setting(
        False, "stop with an error when a file cannot be read or a test image is a copy of a training image"
    )
    cache_mb: int = setting(
        1024, "decoded images are kept in RAM up to this many MB, beyond it in a file in --model-dir", low=0
    )

    def __post_init__(self):
        super().__post_init__()
        if self.backbone_weights and not os.path.isfile(self.backbone_weights):
            raise UsageError(
                f"`--backbone-weights` {self.backbone_weights}: file not found. Give the path of a weights file you "
                "have, or leave the flag out to use the network's ImageNet weights."
            )
        if self.threshold != "auto" and not _is_probability(self.threshold):
            raise UsageError(f"`--threshold` must be auto or a number from 0 to 1. Received: {self.threshold}")
        if self.target_recall:
            name, _, recall = self.target_recall.rpartition("=")
            if not name or not _is_probability(recall) or float(recall) == 0:
                raise UsageError(
                    f"`--target-recall` must be CLASS=R with R above 0 and at most 1, e.g. Dogs=0.95. "
                    f"Received: {self.target_recall}"
                )
            if self.threshold != "auto":
                raise UsageError("`--target-recall` chooses the threshold itself: leave `--threshold` out.")

    def target(self):
        """(class name, recall) of --target-recall, or None."""
        if not self.target_recall:
            return None
        name, _, recall = self.target_recall.rpartition("=")
        return name, float(recall)


def _is_probability(text):
    try:
        return 0.0 <= float(text) <= 1.0
    except ValueError:
        return False


@dataclasses.dataclass
class PredictConfig(_Checked):
    model_dir: str = setting("models", "folder holding model.h5 and metadata.json from train_cnn.py")
    model: str = setting(
        "", "a model file to use instead of <model-dir>/model.h5: Keras (.h5, .keras, Keras 2 .json), .onnx or .tflite"
    )
    input: list = setting(["Dataset/Predict"], "image folders (searched recursively) or image files", nargs="+")
    output: str = setting("predictions.csv", "CSV file the predictions are written to")
    batch_size: int = setting(32, "images per prediction step", low=1, high=4096)
    threshold: float | None = setting(
        None,
        "two classes only: probability from which the second class is chosen",
        low=0.0,
        high=1.0,
        kind=float,
        shown="the model's, 0.5",
    )
    sort_into: str = setting("", "copy each image into <folder>/<label>/ (originals are never moved)")
    evaluate: bool = setting(False, "the input folder has one sub-folder per class: report accuracy")
    explain: str = setting("", "write a Grad-CAM overlay PNG (where the network looked) of each labeled image here")
    weights: str = setting("", "Keras 2 models: the weights .h5 that goes with an architecture .json given as --model")
    classes: str = setting("", "Keras 2 models (no metadata.json): class names in index order, e.g. Cats,Dogs")
    resize: str = setting(
        "",
        "Keras 2 models: how images are resized to the input size",
        choices=["", "nearest", "bilinear"],
        shown="nearest, as the tutorials did",
    )
    rescale: float = setting(
        1 / 255, "Keras 2 models: factor the pixel values (0-255) are multiplied by", low=0.0, shown="1/255"
    )
    resume: bool = setting(False, "continue an interrupted run into the same --output: files already labeled are kept")
    export: str = setting(
        "",
        "write the model as model.onnx, model.tflite, model_int8.tflite or saved_model/ into its folder, and stop",
        choices=["", "onnx", "litert", "litert-int8", "saved-model"],
    )
    calibration: str = setting(
        "", "--export litert-int8: a folder of photos to calibrate on", shown="300 of the training images"
    )
    convert: str = setting("", "write the --model (e.g. a Keras 2 file) in today's format into this folder, and stop")
    ignore_checksum: bool = setting(False, "use a model file even if it changed since training (SHA-256 mismatch)")
    unsafe_load: bool = setting(False, "allow Lambda layers and non-Keras classes: only for model files you trust")
    runtime: str = setting(
        "auto",
        "what labels the images: auto (ONNX Runtime on CPUs, where it is fastest, from model.onnx beside the model; "
        "TensorFlow on GPUs), keras, onnx or litert",
        choices=["auto", "keras", "onnx", "litert"],
    )
    mixed_precision: str = setting(
        "auto",
        "labeling arithmetic in Keras: auto (float16 on GPUs with tensor cores, bfloat16 on CPUs with AMX for "
        "networks without depthwise convolutions), on or off",
        choices=["auto", "on", "off"],
    )
    serve: bool = setting(
        False,
        "start the local app instead of labeling: a page to try pictures, a review page for the data that training "
        "flagged, and POST /api/predict; Ctrl-C stops it",
    )
    host: str = setting(
        "127.0.0.1", "--serve: the address to listen on (any other than 127.0.0.1, localhost or ::1 needs the token)"
    )
    port: int = setting(8000, "--serve: the port to listen on", low=1, high=65535)
    token: str = setting(
        "",
        "--serve: the token (an X-Token header) that every request reading or moving the data folder must carry",
        shown="none on 127.0.0.1, else a random one",
    )
    data_dir: str = setting(
        "", "--serve: the data folder the review page fixes", shown="the one the model was trained on"
    )
    max_upload_mb: float = setting(20.0, "--serve: the largest picture accepted, in MB", low=0.01, high=1024.0)


def flag_name(field):
    return "--" + field.name.replace("_", "-")


def check(config):
    """Raises UsageError naming the flag when a value is outside what the field allows; returns `config`."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        meta = field.metadata
        if value is None:
            continue
        low, high = meta["low"], meta["high"]
        if (low is not None and value < low) or (high is not None and value > high):
            allowed = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise UsageError(f"`{flag_name(field)}` must be {allowed}. Received: {value}")
        if meta["choices"] is not None and value not in meta["choices"]:
            choices = ", ".join(choice for choice in meta["choices"] if choice)
            raise UsageError(f"`{flag_name(field)}` must be one of {choices}. Received: {value}")
    return config


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line, exit status 2, without the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Writes each flag's default once, readably, after its help; keeps the epilog's layout."""

    def _get_help_string(self, action):
        shown = getattr(action, "shown", None)
        if shown is None:
            default = action.default
            if any(default is nothing for nothing in (None, False, argparse.SUPPRESS)) or default == "":
                return action.help
            shown = " ".join(map(str, default)) if isinstance(default, list) else _plain(default)
        return f"{action.help} (default: {shown})"


def _allowed_range(low, high):
    if low is None:
        return ""
    return f"{_plain(low)} to {_plain(high)}" if high is not None else f"at least {_plain(low)}"


def _plain(value):
    return f"{value:g}" if isinstance(value, float) else value


def build_parser(config_class, description, epilog=None):
    """Builds an argparse parser with one flag per field of `config_class`."""
    parser = _OneLineParser(description=description, epilog=epilog, formatter_class=_HelpFormatter)
    for field in dataclasses.fields(config_class):
        meta = field.metadata
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        if field.type is bool:
            parser.add_argument(flag_name(field), action="store_true", help=meta["help"])
            continue
        value_type = meta["kind"] or {int: int, float: float}.get(field.type, str)
        choices = [choice for choice in meta["choices"] or [] if choice]
        allowed = _allowed_range(meta["low"], meta["high"])
        action = parser.add_argument(
            flag_name(field),
            type=value_type,
            default=default,
            nargs=meta["nargs"],
            help=f"{meta['help']}, {allowed}" if allowed else meta["help"],
            metavar="{" + ",".join(choices) + "}" if choices else None,
        )
        action.shown = meta["shown"]
    return parser


def parse(config_class, doc, argv=None):
    """Parses `argv` (default: sys.argv) into a checked `config_class` instance.

    `doc` is the script's docstring: its first line describes the script in --help,
    the rest (exit statuses, files written) follows the flags.
    """
    description, _, epilog = doc.strip().partition("\n")
    parser = build_parser(config_class, description, epilog.strip() or None)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return config_class(**vars(args))
    except UsageError as error:
        parser.error(str(error))
