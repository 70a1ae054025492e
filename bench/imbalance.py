"""Benchmark 9: imbalanced classes and grayscale photos, scored on the balanced Test_Set.

Imbalance: 1000 cats and 100 dogs from the shared Training_Set (10:1, no Test_Set in the
training folder), trained with the defaults (class weights, threshold chosen on validation)
and with `--class-weight none --threshold 0.5`; both labeled on the whole balanced Test_Set by
predict.py --evaluate: accuracy, balanced accuracy, recall of each class.
--grayscale: the first N photos per class (default 1000) as they are and converted to
grayscale JPEGs, trained with the defaults; Test_Set in colour and in grayscale.

Usage: python bench/imbalance.py [--grayscale [--per-class 1000]]
"""

import argparse
import os

from common import OUT, machine, photos_dir, run_script, table


def linked_subset(data, counts, folder):
    """A Training_Set of symbolic links to the first counts[class] photos of each class of `data`."""
    for class_dir in sorted((data / "Training_Set").iterdir()):
        target = folder / "Training_Set" / class_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for photo in sorted(class_dir.iterdir())[: counts[class_dir.name]]:
            if not (target / photo.name).exists():
                (target / photo.name).symlink_to(photo)
    return folder


def grayscale_copy(source, target):
    """Every photo below `source` written below `target` as a grayscale JPEG (same relative path)."""
    from PIL import Image

    for folder, _, names in os.walk(source, followlinks=True):
        for name in names:
            destination = target / os.path.relpath(os.path.join(folder, name), source)
            if destination.exists():
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(os.path.join(folder, name)) as image:
                image.convert("L").save(destination.with_suffix(".jpg"), quality=92)
    return target


def train(data_dir, model_dir, *flags):
    wall, stdout, rss = run_script("train_cnn.py", "--data-dir", data_dir, "--model-dir", model_dir, *flags)
    weights = next(line for line in stdout.splitlines() if line.startswith("Class weights"))
    return wall, weights


def score(model_dir, test_set, name):
    """(accuracy, balanced accuracy, recall of each class) of predict.py --evaluate on `test_set`."""
    output = OUT / f"imbalance_{name}.csv"
    _, stdout, _ = run_script("predict.py", "--model-dir", model_dir, "--input", test_set, "--evaluate",
                              "--output", output)  # fmt: skip
    lines = stdout.splitlines()

    def value(prefix):
        return float(next(line for line in lines if line.startswith(prefix)).split(":")[1].split()[0])

    return value("accuracy:"), value("balanced accuracy:"), value("specificity"), value("sensitivity")


def imbalance(data):
    folder = linked_subset(data, {"Cats": 1000, "Dogs": 100}, OUT / "photos_1000_cats_100_dogs")
    rows = []
    for name, flags in (("defaults", []), ("--class-weight none --threshold 0.5", ["--class-weight", "none",
                                                                                   "--threshold", "0.5"])):  # fmt: skip
        model_dir = OUT / f"model_imbalanced_{'defaults' if not flags else 'plain'}"
        wall, weights = train(folder, model_dir, *flags)
        accuracy, balanced, cats, dogs = score(model_dir, data / "Test_Set", model_dir.name)
        threshold = read_threshold(model_dir)
        rows.append([name, f"{wall / 60:.1f}", f"{threshold:.3f}", f"{accuracy:.2%}", f"{balanced:.2%}",
                     f"{cats:.2%}", f"{dogs:.2%}"])  # fmt: skip
        print(f"  {name}: {weights}")
    print("Training: 1000 cats, 100 dogs (no Test_Set); scored on the balanced Test_Set (500 + 500):")
    print(table(rows, ["training flags", "wall minutes", "threshold", "accuracy", "balanced accuracy",
                       "recall Cats", "recall Dogs"]))  # fmt: skip


def read_threshold(model_dir):
    import json

    return json.loads((model_dir / "metadata.json").read_text())["threshold"]


def grayscale(data, per_class):
    colour = linked_subset(data, {"Cats": per_class, "Dogs": per_class}, OUT / f"photos_{per_class}_per_class_colour")
    grey = grayscale_copy(colour / "Training_Set", OUT / f"photos_{per_class}_per_class_grey" / "Training_Set").parent
    grey_test = grayscale_copy(data / "Test_Set", OUT / "test_set_grey")
    rows = []
    for name, folder in (("colour", colour), ("grayscale", grey)):
        model_dir = OUT / f"model_{name}"
        wall, _ = train(folder, model_dir)
        for test_name, test_set in (("colour", data / "Test_Set"), ("grayscale", grey_test)):
            accuracy, balanced, _, _ = score(model_dir, test_set, f"{name}_on_{test_name}")
            rows.append([name, test_name, f"{wall / 60:.1f}", f"{accuracy:.2%}", f"{balanced:.2%}"])
    print(f"Training: {per_class} photos per class; scored on the whole Test_Set:")
    print(table(rows, ["trained on", "Test_Set in", "wall minutes", "accuracy", "balanced accuracy"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grayscale", action="store_true", help="grayscale photos against colour, instead")
    parser.add_argument("--per-class", type=int, default=1000)
    args = parser.parse_args()
    print(f"Machine: {machine()}")
    OUT.mkdir(parents=True, exist_ok=True)
    if args.grayscale:
        grayscale(photos_dir(), args.per_class)
    else:
        imbalance(photos_dir())


if __name__ == "__main__":
    main()
