"""Finding the classes and image files in the user's folders.

Raises `UsageError` with one line naming the folder and the fix for anything the
user can set right: missing or empty folders, a single class, mismatched classes.
"""

import os
import pathlib

from imgclf.cli import UsageError

# Files that operating systems and archivers leave beside photos.
JUNK_NAMES = {"thumbs.db", "desktop.ini", "__macosx", "ehthumbs.db"}


def is_junk(name):
    """True for hidden files (`.DS_Store`, `._photo.jpg`) and OS droppings (`Thumbs.db`, `__MACOSX`)."""
    return name.startswith(".") or name.lower() in JUNK_NAMES


def list_files(folder):
    """All non-junk files below `folder`, recursively, following links, sorted by path."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not is_junk(d))
        found.extend(os.path.join(root, name) for name in sorted(files) if not is_junk(name))
    return found


def list_classes(folder):
    """Sorted names of the class sub-folders of `folder`."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: folder not found. Create it with one sub-folder of images per class.")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not is_junk(p.name))
    if len(classes) < 2:
        found = f"only '{classes[0]}'" if classes else "none"
        raise UsageError(
            f"{folder}: needs at least two class sub-folders (e.g. {folder}/Cats, {folder}/Dogs); found {found}."
        )
    return classes


def scan_class_folders(folder, classes=None):
    """Lists the files of a `<folder>/<class>/...` tree.

    Args:
        folder: the folder holding one sub-folder per class.
        classes: the expected class names; default: the sub-folders found.

    Returns:
        (paths, labels, classes): file paths, each one's class index, and the class names.
    """
    found_classes = list_classes(folder)
    if classes is not None and found_classes != list(classes):
        raise UsageError(
            f"{folder}: its class folders {found_classes} differ from the training classes {list(classes)}. "
            "Give both the same sub-folders."
        )
    paths, labels = [], []
    for index, name in enumerate(found_classes):
        files = list_files(os.path.join(folder, name))
        if not files:
            raise UsageError(f"{os.path.join(folder, name)}: class folder holds no files. Add images or remove it.")
        paths.extend(files)
        labels.extend([index] * len(files))
    return paths, labels, found_classes


def list_inputs(inputs):
    """The files to label: folders are searched recursively, files are taken as given."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            paths.extend(list_files(item))
        elif os.path.lexists(item):
            paths.append(item)
        else:
            raise UsageError(f"--input {item}: no such file or folder.")
    if not paths:
        raise UsageError(f"--input {' '.join(inputs)}: no files found. Put the images to label there.")
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
