"""Which images train, which choose (the best epoch, the threshold) and which score the model once:
the scan of the folders, the unreadable files left out, copies kept on one side, splits.csv."""

import csv
import dataclasses
import io
import os

import numpy as np

from imgclf import artifacts, data, diagnosis, folders
from imgclf import images as image_io
from imgclf.cli import UsageError

SKIPPED_FILE = "skipped_files.txt"
SPLITS_FILE = "splits.csv"


@dataclasses.dataclass
class Split:
    """The scanned data: every file once, its label, and which indices train, which choose (the best
    epoch, the threshold) and which score the model once at the end (none without a test set)."""

    paths: list
    labels: np.ndarray
    class_names: list
    train: np.ndarray
    validation: np.ndarray
    validation_source: str
    test: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    test_source: str = ""
    drawn: tuple = ()  # the roles ("validation", "test") drawn at random from Training_Set

    def parts(self):
        """{index: "training" | "validation" | "test"} of every file in the split."""
        part = {}
        for name, indices in (("training", self.train), ("validation", self.validation), ("test", self.test)):
            part.update(dict.fromkeys(indices.tolist(), name))
        return part


def scan(config):
    """Finds the classes and files and decides which images train, which validate and which test.

    Validation: `Validation_Set/` when there is one, else a stratified `--validation-split`
    of Training_Set. Test: `Test_Set/`, else a stratified `--test-split` of Training_Set
    (none by default). A Test_Set never chooses anything: it is scored once, at the end.
    The folders' names are matched loosely (`training_set`, `Test Set`, `val`); a folder
    with no images in it counts as absent.
    """
    training_dir = folders.find_folder(config.data_dir, folders.TRAINING_NAMES)
    if training_dir is None:
        raise UsageError(
            f"{os.path.abspath(os.path.join(config.data_dir, 'Training_Set'))}: folder not found. Pass --data-dir "
            "with the folder that holds Training_Set/<class>/ (see Dataset/README.md), or put one sub-folder of "
            "images per class there; in the repository, `make demo` trains on a generated demo set."
        )
    paths, labels, class_names = folders.scan_class_folders(training_dir)
    train = np.arange(len(paths))
    given, sources = {}, {}
    for role, names in (("validation", folders.VALIDATION_NAMES), ("test", folders.TEST_NAMES)):
        folder = folders.find_folder(config.data_dir, names)
        if folder is not None and not folders.holds_files(folder):
            print(f"{folder} holds no images, so it is left out.")
        elif folder is not None:
            role_paths, role_labels, _ = folders.scan_class_folders(folder, classes=class_names)
            given[role] = np.arange(len(paths), len(paths) + len(role_paths))
            sources[role] = os.path.basename(folder)
            paths, labels = paths + role_paths, labels + role_labels
    labels = np.array(labels)
    training_name = os.path.basename(training_dir)
    test = given.get("test")
    if test is None and config.test_split:
        kept, held = data.stratified_split(labels[train], config.test_split, config.seed, "--test-split")
        train, test = train[kept], train[held]
        sources["test"] = f"{config.test_split:g} of {training_name}"
    validation = given.get("validation")
    if validation is None:
        kept, held = data.stratified_split(labels[train], config.validation_split, config.seed)
        train, validation = train[kept], train[held]
        remaining = " (after the test share)" if "test" in sources and "test" not in given else ""
        sources["validation"] = f"{config.validation_split:g} of {training_name}{remaining}"
    empty = np.zeros(0, np.int64)
    drawn = tuple(role for role in ("validation", "test") if role in sources and role not in given)
    return Split(
        paths, labels, class_names, train, validation, sources["validation"],
        empty if test is None else test, sources.get("test", ""), drawn,
    )  # fmt: skip


def drop_unreadable(split, errors, model_dir, strict=False):
    """Removes unreadable files from the split and lists them in skipped_files.txt (with --strict: fails)."""
    bad = {index for index, _ in errors}
    lines = [f"{split.paths[index]}\t{reason}" for index, reason in errors]
    if errors and strict:  # Listed here only: the folder keeps describing the model it holds.
        print(f"Unreadable files ({len(errors)}):\n" + "".join(f"  {line.replace(chr(9), ': ')}\n" for line in lines))
        first_path, first_reason = lines[0].split("\t", 1)
        raise UsageError(
            f"{first_path}: {first_reason} ({len(errors)} unreadable file(s) in all). Fix or remove them, or train "
            "without --strict to skip them."
        )
    artifacts.write_text(artifacts.staged(model_dir, SKIPPED_FILE), "".join(line + "\n" for line in lines))
    train = np.array([i for i in split.train if i not in bad], np.int64)
    validation = np.array([i for i in split.validation if i not in bad], np.int64)
    test = np.array([i for i in split.test if i not in bad], np.int64)
    if errors:
        print(
            f"Skipped {len(errors)} unreadable file(s), listed in {os.path.join(model_dir, SKIPPED_FILE)}; "
            f"{len(train)} training, {len(validation)} validation and {len(test)} test images remain:"
        )
        for line in lines[:5]:
            print("  " + line.replace("\t", ": "))
    for name, indices in (("Training", train), ("Validation", validation), ("Test", test)):
        if name == "Test" and not len(split.test):
            continue
        present = set(split.labels[indices].tolist())
        for label, class_name in enumerate(split.class_names):
            if label not in present:
                raise UsageError(f"{name} images of class '{class_name}': none could be read. Add readable images.")
    return dataclasses.replace(split, train=train, validation=validation, test=test)


def check_copies(split, decoded, config):
    """Finds the duplicate images and writes duplicates.csv; returns (split, copies as `diagnosis.Copy`s).

    A copy of a training image that a random split put among the validation or test
    images moves into training (a random split must not separate copies); copies in
    folders the user made are reported, and with --strict a test image that is a copy
    of a training image stops the run (exit 2).
    """
    pairs = diagnosis.find_copies(decoded.thumbnails, split.paths, [index for index, _ in decoded.errors])
    copies = diagnosis.oriented(pairs, split.parts())
    moved = {role: diagnosis.leaked(copies, split.parts(), role) for role in split.drawn}
    while any(moved.values()):  # Until no copy straddles: a moved image may have copies of its own.
        for role, indices in moved.items():
            if indices:
                print(f"Moved {len(indices)} {role} image(s) into training: copies of training images.")
        everything = np.concatenate(list(moved.values())).astype(np.int64)
        split = dataclasses.replace(
            split,
            train=np.union1d(split.train, everything),
            validation=np.setdiff1d(split.validation, everything),
            test=np.setdiff1d(split.test, everything),
        )
        copies = diagnosis.oriented(pairs, split.parts())
        moved = {role: diagnosis.leaked(copies, split.parts(), role) for role in split.drawn}
    diagnosis.write_copies(copies, split.paths, split.parts(), artifacts.staged(config.model_dir))
    sources = {"validation": split.validation_source, "test": split.test_source}
    diagnosis.check_leaks(copies, split.paths, split.parts(), sources, config.model_dir, config.strict)
    return split, copies


def color_mode_of(split):
    """ "grayscale" when every training image is stored with one channel (X-rays, scans), else "rgb".

    A grayscale model's metadata.json says so, and predict.py then reduces colour
    photos to grey before labeling them, as the model only ever saw grey.
    """
    if all(image_io.is_grayscale(split.paths[i]) for i in split.train):
        print("Every training image is grayscale: colour photos given to this model are labeled in grey.")
        return "grayscale"
    return "rgb"


def looks_grayscale(split, sample=64):
    """True when the training images are grey pictures, however they are stored: those of `sample` of them, evenly
    spaced, all look grey (`images.looks_grayscale`)."""
    chosen = split.train[np.linspace(0, len(split.train) - 1, min(sample, len(split.train))).astype(int)]
    return all(image_io.looks_grayscale(split.paths[index]) for index in chosen)


def write_splits(split, errors, model_dir):
    """Writes splits.csv: every file, its class and its part (training, validation, test, or skipped)."""
    part = split.parts()
    part.update(dict.fromkeys((index for index, _ in errors), "skipped (unreadable)"))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "class", "split"])
    writer.writerows(
        [path, split.class_names[label], part[i]] for i, (path, label) in enumerate(zip(split.paths, split.labels))
    )
    artifacts.write_text(artifacts.staged(model_dir, SPLITS_FILE), buffer.getvalue())
