"""Benchmark 4: Test_Set accuracy against wall-clock minutes on the shared photos.

Runs train_cnn.py with each setting, as a user would, and reports: wall time, Test_Set
accuracy of the saved model as predict.py measures it (`--evaluate`), peak memory, and
the validation accuracy after each epoch against minutes since the start, as CSV and as
one PNG. The few-photo settings train on the first N photos per class of Training_Set
(a folder of symbolic links in bench/out) and validate on the whole Test_Set.

Usage: python bench/accuracy.py [--setting default] [--setting 20-per-class] ...
"""

import argparse
import csv
import os

from common import OUT, ROOT, machine, photos_dir, read_metadata, run_script, table

SETTINGS = {
    "default": [],  # What `python train_cnn.py` does with no flags: pretrained EfficientNet-Lite0.
    "20-per-class": [],
    "100-per-class": [],
    "lite1": ["--arch", "efficientnet_lite1"],  # Larger offline backbones, frozen, at 240 and 260 px.
    "lite2": ["--arch", "efficientnet_lite2"],
    "compact": ["--arch", "compact"],  # The earlier default, trained from scratch.
    "long": ["--arch", "compact", "--image-size", "128", "--epochs", "45"],  # From scratch, the longer setting.
}
PER_CLASS = {"20-per-class": 20, "100-per-class": 100}


def few_photos(data, per_class):
    """A Dataset-layout folder in bench/out: the first `per_class` training photos of each class, the whole Test_Set."""
    folder = OUT / f"photos_{per_class}_per_class"
    for class_dir in sorted((data / "Training_Set").iterdir()):
        target = folder / "Training_Set" / class_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for photo in sorted(class_dir.iterdir())[:per_class]:
            if not (target / photo.name).exists():
                (target / photo.name).symlink_to(photo)
    if not (folder / "Test_Set").exists():
        (folder / "Test_Set").symlink_to(data / "Test_Set")
    return folder


def curve(model_dir, offset_seconds):
    """(minutes since the script started, validation accuracy) after each epoch, from history.csv."""
    with open(os.path.join(model_dir, "history.csv"), newline="") as handle:
        return [
            ((offset_seconds + float(row["seconds"])) / 60, float(row["val_accuracy"]))
            for row in csv.DictReader(handle)
        ]


def evaluate(model_dir, data):
    """Test_Set accuracy of the saved model, measured by predict.py --evaluate."""
    output = os.path.join(model_dir, "evaluation.csv")
    _, stdout, _ = run_script("predict.py", "--model-dir", model_dir, "--input", data / "Test_Set", "--evaluate",
                           "--output", output)  # fmt: skip
    line = next(line for line in stdout.splitlines() if line.startswith("accuracy: "))
    return float(line.split()[1])


def saved_curves():
    """Every setting's curve written so far (bench/out/accuracy_<setting>.csv), so one plot shows them all."""
    curves = {}
    for name, flags in SETTINGS.items():
        path = OUT / f"accuracy_{name}.csv"
        if path.exists():
            with open(path, newline="") as handle:
                points = [(float(row["minutes"]), float(row["val_accuracy"])) for row in csv.DictReader(handle)]
            curves[f"{name}: train_cnn.py {' '.join(flags)}".strip()] = points
    return curves


def plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, points in curves.items():
        axes.plot(*zip(*points), marker=".", label=name)
    axes.axhline(0.886, color="gray", linestyle="--", linewidth=1, label="Keras 2 tutorial model, 90 epochs (88.6%)")
    axes.axhline(0.99, color="gray", linestyle=":", linewidth=1, label="99%")
    axes.set_xlabel("wall-clock minutes on 2 CPU cores (decoding included)")
    axes.set_ylabel("validation accuracy")
    axes.set_ylim(0.5, 1.0)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", action="append", choices=sorted(SETTINGS))
    settings = parser.parse_args().setting or ["default"]
    data = photos_dir()
    print(f"Machine: {machine()}")
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in settings:
        model_dir = OUT / f"model_{name}"  # Kept: bench/predict_throughput.py labels with the default one.
        photos = few_photos(data, PER_CLASS[name]) if name in PER_CLASS else data
        wall, _, peak_mb = run_script("train_cnn.py", "--data-dir", photos, "--model-dir", model_dir, *SETTINGS[name])
        metadata = read_metadata(model_dir)
        training = metadata["training"]
        startup = wall - training["seconds"]
        points = curve(model_dir, startup + training["decode_seconds"])
        accuracy = evaluate(model_dir, data)
        rows.append([name, " ".join(SETTINGS[name]) or "(none)", training["images"], f"{wall / 60:.1f}",
                     training["epochs_run"],
                     f"{metadata['validation']['accuracy']:.1%}", f"{metadata.get('test', {}).get('accuracy', 0):.1%}",
                     f"{accuracy:.1%}", f"{peak_mb:.0f}"])  # fmt: skip
        with open(OUT / f"accuracy_{name}.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([("minutes", "val_accuracy"), *points])
    png = ROOT / "docs" / "accuracy_vs_minutes.png"
    png.parent.mkdir(exist_ok=True)
    plot(saved_curves(), png)
    headers = ["setting", "flags", "training photos", "wall minutes", "epochs", "validation acc. (chose the epoch)",
               "Test_Set acc. (training report)", "Test_Set acc. (predict.py --evaluate)", "peak RSS MB"]  # fmt: skip
    print(table(rows, headers))
    print(f"Curve: {png}")


if __name__ == "__main__":
    main()
