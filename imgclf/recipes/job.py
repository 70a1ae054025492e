"""What every recipe shares: the job (one training run's data and settings), a recipe's result, and the fit
that a resumed run does not repeat."""

import dataclasses
import glob
import json
import os

import numpy as np

from imgclf import artifacts, decoding, fitting

DONE_FILE = "done.json"
FINAL_WEIGHTS = "final.weights.h5"


@dataclasses.dataclass
class Job:
    """One training run as the recipes see it: its settings, data, first pass and deadline."""

    config: object  # the TrainConfig
    strategy: object  # the tf.distribute strategy
    split: object  # the splits.Split, unreadable files left out
    labels: np.ndarray  # every file's label, as the loss wants it
    sample_weights: object  # every file's class weight, or None
    decoded: object  # the first pass (decoding.Decoded): a frozen backbone's features of every file, or the images
    model: object  # the network of --arch (or --init-from), built before the first pass
    deadline: float | None  # time.time() by which the recipes should end (the budget's, less the end's); None: none
    grayscale: bool = False  # the training images are grey pictures (X-rays, scans): no mirrored copies then
    kept_images: dict = dataclasses.field(default_factory=dict)  # {size: uint8 images of every file}
    skipped: dict = dataclasses.field(default_factory=dict)  # {recipe: why auto skips it}, known before it starts
    # {(architecture, image size): that frozen backbone's export, which the first pass ran}, for later passes: a file,
    # not its runtime's session, which would hold its memory meanwhile
    backbones: dict = dataclasses.field(default_factory=dict)
    keras_slowdown: float = 1.0  # the first pass's runtime against Keras, where fine-tune trains: its pace is Keras's

    def images(self, size):
        """Every file decoded at `size` px: kept from the first pass, or decoded now, once."""
        if size not in self.kept_images:
            print(f"Decoding every image at {size}x{size} px...", flush=True)
            decoded = decoding.decode_all(
                self.split.paths, size, self.config.cache_mb * 2**20, cache_file(self.config.model_dir, size)
            )
            self.kept_images[size] = decoded.inputs
        return self.kept_images[size]


def augmentation(job, settings):
    """`settings` (RandomAffine's) for the images of `job`: without flips for grey pictures, where left and right
    are rarely interchangeable (the heart in an X-ray, the text of a scan)."""
    return {**settings, "flip": settings.get("flip", True) and not job.grayscale}


def cache_file(model_dir, size):
    """Where decoded images beyond --cache-mb are kept while training runs (removed by `remove_caches`)."""
    return os.path.join(model_dir, f".decoded-{size}px.npy")


def remove_caches(model_dir):
    """Removes the decoded-image caches a run left in `model_dir`."""
    for path in glob.glob(os.path.join(glob.escape(model_dir), ".decoded-*.npy")):
        os.remove(path)


@dataclasses.dataclass
class Result:
    """A trained candidate."""

    recipe: str
    arch: str
    image_size: int
    model: object  # the whole network, at its best epoch
    trainee: object  # what trained and scores `inputs`: the head on features, or `model`
    inputs: object  # the trainee's input for every file (features or images)
    history: dict
    learning_rate: float  # the peak, on one device
    seconds: float = 0.0
    validation: dict = None  # accuracy, balanced_accuracy and loss on the validation images
    right: np.ndarray = None  # which validation images it labels right
    exported: str = None  # `model` exported for the fast runtime (in the checkpoints), once a pass made it worth it


def train_or_restore(job, model, inputs, name, **fit_args):
    """`fitting.fit` of `model` under `name`; returns (history, why it was skipped or None).

    A run that finished before an interruption is not repeated on --resume: its final
    weights are loaded back instead (and a skipped one stays skipped).
    """
    folder = fitting.checkpoint_dir(job.config, name)
    done_file = os.path.join(folder, DONE_FILE)
    if os.path.isfile(done_file):
        with open(done_file, encoding="utf-8") as handle:
            skipped = json.load(handle)["skipped"]
        if skipped:
            return {}, skipped
        model.load_weights(os.path.join(folder, FINAL_WEIGHTS))
        print(f"{name}: finished before the interruption; its weights are kept.", flush=True)
        return fitting.read_history(os.path.join(folder, "history.csv")), None
    history, skipped = fitting.fit(job, model, inputs, name, **fit_args)
    if not skipped:
        model.save_weights(os.path.join(folder, FINAL_WEIGHTS))
    artifacts.write_text(done_file, json.dumps({"skipped": skipped}))
    return history, skipped
