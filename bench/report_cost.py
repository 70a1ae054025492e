"""What the data checks and the report page cost, what they find in the shared photos, and Grad-CAM's speed.

    python bench/report_cost.py                  # trains the default network on the shared photos (about 3 min)
    python bench/report_cost.py --model-dir DIR  # reads a run already made (its metadata.json and CSVs)

Prints, from one training run: the duplicate check's and the report's (top losses with Grad-CAM,
suspect labels out of fold, report.html) seconds against the whole run; the duplicates and
possible label errors found; then Grad-CAM's images/s on the trained model, and `predict.py`
with and without `--explain` on the same photos, side by side.
"""

import argparse
import csv
import os
import time
from collections import Counter

from common import OUT, machine, photos_dir, read_metadata, run_script


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def training_costs(model_dir):
    training = read_metadata(model_dir)["training"]
    whole = training["seconds"] + training["report_seconds"]  # "seconds" is measured before the report
    checks = training["duplicate_check_seconds"] + training["report_seconds"]
    print(f"whole training run: {whole:.1f} s (decoding and features {training['decode_seconds']:.1f} s)")
    duplicates = training["duplicate_check_seconds"]
    print(f"  duplicate check   {duplicates:6.2f} s  {duplicates / whole:6.2%}")
    print(f"  report and checks {training['report_seconds']:6.2f} s  {training['report_seconds'] / whole:6.2%}")
    print(f"  together          {checks:6.2f} s  {checks / whole:6.2%}  (target: at most 5%)")
    copies = _rows(os.path.join(model_dir, "duplicates.csv"))
    kinds = Counter((row["kind"], row["path_part"], row["duplicate_of_part"]) for row in copies)
    print(f"duplicates in the shared photos: {len(copies)} pair(s)")
    for (kind, part, other), count in sorted(kinds.items()):
        print(f"  {count} {kind}: {part} copy of {other}")
    for row in copies:
        print(f"    {row['path']}  ~  {row['duplicate_of']}  ({row['kind']}, {float(row['similarity']):.3f})")
    suspects = _rows(os.path.join(model_dir, "suspect_labels.csv"))
    judged = Counter(row["judged_by"] for row in suspects)
    print(f"possible label errors: {len(suspects)} ({dict(judged)})")


def gradcam_speed(model_dir, photos, repeats=3):
    import numpy as np

    from imgclf import artifacts, gradcam, images

    model = artifacts.load_model(os.path.join(model_dir, artifacts.MODEL_FILE))
    size = model.input_shape[1]
    explainer = gradcam.GradCam(model)
    for batch in (1, 16):
        pixels = np.stack([images.load_image(path, size) for path in photos[:batch]])
        explainer.heatmaps(pixels, [0] * batch)  # traced once
        started = time.perf_counter()
        for _ in range(repeats):
            explainer.heatmaps(pixels, [0] * batch)
        rate = batch * repeats / (time.perf_counter() - started)
        print(f"Grad-CAM heat maps, {model.name} at {size} px, batches of {batch:2d}: {rate:6.1f} images/s")


def predict_with_and_without_explain(model_dir, folder, out):
    rates = {}
    for name, extra in (("labels only", []), ("labels + --explain", ["--explain", os.path.join(out, "explain")])):
        seconds, _, _ = run_script(
            "predict.py", "--model-dir", model_dir, "--input", folder, "--output", os.path.join(out, "p.csv"), *extra
        )
        files = len(_rows(os.path.join(out, "p.csv")))
        rates[name] = files / seconds
        print(
            f"predict.py, {name:20s}: {files} files, {rates[name]:6.1f} files/s (whole command, model loading included)"
        )
    print(f"  --explain runs at {rates['labels + --explain'] / rates['labels only']:.2f}x the speed of labeling alone")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", help="a training run on the shared photos already made")
    parser.add_argument("--out", default=str(OUT / "report_cost"))
    args = parser.parse_args()
    print(machine())
    shared = photos_dir()
    model_dir = args.model_dir
    if not model_dir:
        model_dir = os.path.join(args.out, "model")
        seconds, _, _ = run_script("train_cnn.py", "--data-dir", shared, "--model-dir", model_dir)
        print(f"trained the default network on {shared} in {seconds:.0f} s (wall, with start-up)")
    training_costs(model_dir)
    folder = os.path.join(shared, "Test_Set", "Cats")
    photos = sorted(os.path.join(folder, name) for name in os.listdir(folder))
    gradcam_speed(model_dir, photos)
    sample = os.path.join(args.out, "sample")
    os.makedirs(sample, exist_ok=True)
    for path in photos[:200]:
        target = os.path.join(sample, os.path.basename(path))
        if not os.path.exists(target):
            os.symlink(os.path.abspath(path), target)
    predict_with_and_without_explain(model_dir, sample, args.out)


if __name__ == "__main__":
    main()
