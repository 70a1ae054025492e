"""Finding the classes and image files in the user's folders.

Raises `UsageError` with one line naming the folder and the fix for anything the
user can set right: missing or empty folders, a single class, mismatched classes.
"""

import os
import pathlib

from imgclf.cli import UsageError

# Files that operating systems and archivers leave beside photos.
JUNK_NAMES = {"thumbs.db", "desktop.ini", "__macosx", "ehthumbs.db"}

# The names a data folder's parts go by, the canonical one first. Matching ignores
# case, spaces, '-' and '_', so `training_set`, `Training Set` and `train` all count.
TRAINING_NAMES = ("Training_Set", "training", "train")
VALIDATION_NAMES = ("Validation_Set", "validation", "val", "valid")
TEST_NAMES = ("Test_Set", "test", "testing")


def is_junk(name):
    """True for hidden files (`.DS_Store`, `._photo.jpg`) and OS droppings (`Thumbs.db`, `__MACOSX`)."""
    return name.startswith(".") or name.lower() in JUNK_NAMES


def list_files(folder, left_out=None):
    """All non-junk files below `folder`, recursively, following links, sorted by path.

    `left_out(path)`: for each sub-folder, why not to walk into it (then printed), or None to walk in.
    """
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        kept = []
        for name in sorted(d for d in dirs if not is_junk(d)):
            why = left_out(os.path.join(root, name)) if left_out else None
            if why:
                print(f"Left out {os.path.join(root, name)}: {why}.")
            else:
                kept.append(name)
        dirs[:] = kept
        found.extend(os.path.join(root, name) for name in sorted(files) if not is_junk(name))
    return found


def is_model_folder(folder):
    """True for a folder that train_cnn.py wrote (model.h5 and metadata.json): its pictures are reports."""
    return os.path.isfile(os.path.join(folder, "metadata.json")) and os.path.isfile(os.path.join(folder, "model.h5"))


def _comparable(name):
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


def find_folder(parent, names):
    """The sub-folder of `parent` called one of `names` (first preferred), matched loosely; None if none is there."""
    try:
        present = sorted(entry.name for entry in os.scandir(parent) if entry.is_dir() and not is_junk(entry.name))
    except OSError:
        return None
    for name in names:
        for candidate in present:
            if _comparable(candidate) == _comparable(name):
                return os.path.join(parent, candidate)
    return None


def holds_files(folder):
    """True when `folder` has at least one non-junk file anywhere below it."""
    for _, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not is_junk(d)]
        if any(not is_junk(name) for name in files):
            return True
    return False


def _class_folders(folder):
    return [p.name for p in pathlib.Path(folder).iterdir() if p.is_dir() and not is_junk(p.name)]


def list_classes(folder):
    """Sorted names of the class sub-folders of `folder`."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: folder not found. Create it with one sub-folder of images per class.")
    classes = sorted(_class_folders(folder))
    if len(classes) < 2:
        found = f"only '{classes[0]}'" if classes else "none"
        raise UsageError(
            f"{folder}: needs at least two class sub-folders (e.g. {folder}/Cats, {folder}/Dogs); found {found}."
        )
    return classes


def scan_class_folders(folder, classes=None, subset=False):
    """Lists the files of a `<folder>/<class>/...` tree.

    Args:
        folder: the folder holding one sub-folder per class.
        classes: the expected class names; default: the sub-folders found.
        subset: the folder may hold only some of `classes` (labeled images to evaluate a model on).

    Returns:
        (paths, labels, classes): file paths, each one's index in the class names, and the class names.
    """
    found_classes = list_classes(folder) if not subset else sorted(_class_folders(folder))
    if classes is not None and subset:
        unknown = [name for name in found_classes if name not in classes]
        if not found_classes:
            raise UsageError(f"{folder}: needs one sub-folder per class, named like the model's {list(classes)}.")
        if unknown:
            raise UsageError(
                f"{folder}: its class folders {unknown} are not classes of the model {list(classes)}. "
                "Name each sub-folder after the class of its images."
            )
    elif classes is not None and found_classes != list(classes):
        raise UsageError(
            f"{folder}: its class folders {found_classes} differ from the training classes {list(classes)}. "
            "Give both the same sub-folders."
        )
    class_names = list(classes) if classes is not None else found_classes
    paths, labels = [], []
    for name in found_classes:
        files = list_files(os.path.join(folder, name))
        if not files:
            raise UsageError(f"{os.path.join(folder, name)}: class folder holds no files. Add images or remove it.")
        paths.extend(files)
        labels.extend([class_names.index(name)] * len(files))
    return paths, labels, class_names


def list_inputs(inputs, outputs=()):
    """The files to label: folders are searched recursively, files are taken as given.

    The search never enters `outputs` (the folders this run writes pictures into: --sort-into, --explain)
    nor a model folder (its plots are not pictures to label), and says which it left out.
    """
    outputs = {os.path.realpath(path) for path in outputs if path}

    def left_out(folder):
        if os.path.realpath(folder) in outputs:
            return "an output folder"
        return "a model folder" if is_model_folder(folder) else None

    paths = []
    for item in inputs:
        if not os.path.lexists(item):  # `Dataset/predict` is the Predict folder too.
            parent, name = os.path.split(os.path.normpath(item))
            item = find_folder(parent or ".", [name]) or item
        if os.path.isdir(item):
            paths.extend(list_files(item, left_out))
        elif os.path.lexists(item):
            paths.append(item)
        else:
            raise UsageError(f"--input {item}: no such file or folder.")
    if not paths:
        raise UsageError(
            f"--input {' '.join(inputs)}: no pictures there to label. Put them there (sub-folders are fine), "
            "or pass --input FOLDER_OR_FILES."
        )
    return paths


def check_writable_folder(folder, flag):
    """Creates `folder` if needed and proves it can be written, before any long work starts."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write-test-{os.getpid()}")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as error:
        raise UsageError(f"{flag} {folder}: cannot write there ({error.strerror}). Choose a writable folder.") from None
