"""Benchmarks 2 and 3: labeling throughput of predict.py against the classic loop and the decode floor.

predict.py labels N real photos with a trained model; against it, in the same run:
(a) the classic predict loop: load_img + img_to_array + model.predict, one file at a time (timed on a sample);
(b) the decode floor: decoding and resizing the same files on all cores, nothing else.
With --large, the photos are first upscaled to 12-megapixel JPEGs (4000x3000), to show that
reduced-size JPEG decoding keeps large photos within 2x of small ones.

Usage: python bench/predict_throughput.py --model-dir models [--count 2000] [--large]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import OUT, machine, photos_dir, run_script, table  # noqa: E402


def sample_files(data, count):
    from imgclf import folders

    files = folders.list_files(data / "Training_Set")
    step = max(1, len(files) // count)
    return files[::step][:count]


def upscale_to_12mp(files, folder):
    """Writes each photo as a 4000x3000 JPEG (what a phone takes) into `folder`; returns the new paths."""
    from PIL import Image

    paths = []
    for i, path in enumerate(files):
        target = os.path.join(folder, f"large_{i:05d}.jpg")
        with Image.open(path) as image:
            image.convert("RGB").resize((4000, 3000), Image.Resampling.BILINEAR).save(target, quality=90)
        paths.append(target)
    return paths


def decode_floor(files, size):
    """(b) Images/s decoding and resizing with the product's own loader on all cores, and nothing else."""
    from imgclf import data

    started = time.time()
    for _ in data.decode_dataset(files, size, batch_size=64):
        pass
    return len(files) / (time.time() - started)


def classic_loop(files, model_file, size, sample):
    """(a) The tutorials' loop: one load_img and one model.predict per file."""
    import numpy as np
    import tensorflow as tf

    from imgclf import artifacts

    model = artifacts.load_model(model_file)
    image_tools = tf.keras.preprocessing.image
    started = time.time()
    for path in files[:sample]:
        image = image_tools.img_to_array(image_tools.load_img(path, target_size=(size, size)))
        model.predict(np.expand_dims(image, 0), verbose=0)
    return sample / (time.time() - started)


def product(files, model_dir, folder):
    """predict.py on a folder of the files: (labeling images/s, start-up seconds, wall seconds)."""
    output = os.path.join(folder, "predictions.csv")
    started = time.time()
    wall, stdout, _ = run_script("predict.py", "--model-dir", model_dir, "--input", *files, "--output", output)
    line = next(line for line in stdout.splitlines() if line.startswith("Labeled "))
    seconds = float(line.split(" files in ")[1].split(" s ")[0])
    return len(files) / seconds, wall - seconds, time.time() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(OUT / "model_default"), help="default: bench/accuracy.py's model")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--classic-sample", type=int, default=200)
    parser.add_argument("--large", action="store_true", help="also run on 12-megapixel JPEGs")
    parser.add_argument("--large-count", type=int, default=200, help="how many 12-megapixel JPEGs to make")
    args = parser.parse_args()
    from common import read_metadata

    size = read_metadata(args.model_dir)["image_size"]
    model_file = os.path.join(args.model_dir, "model.h5")
    files = sample_files(photos_dir(), args.count)
    print(f"Machine: {machine()}\nModel: {model_file}, {size}x{size}; {len(files)} photos.")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        sets = [("photos as shared (<=256 px)", files)]
        if args.large:
            large = upscale_to_12mp(files[: args.large_count], folder)
            sets = [("photos as shared (<=256 px)", files[: args.large_count]), *sets]
            sets.append(("12-megapixel JPEGs (4000x3000)", large))
        small_rate = None
        for name, paths in sets:
            rate, startup, _ = product(paths, args.model_dir, folder)
            floor = decode_floor(paths, size)
            classic = classic_loop(paths, model_file, size, min(args.classic_sample, len(paths)))
            small_rate = small_rate or rate
            rows.append([name, len(paths), f"{rate:.0f}", f"{startup:.1f}", f"{classic:.1f}", f"{rate / classic:.0f}x",
                         f"{floor:.0f}", f"{rate / floor:.0%}", f"{small_rate / rate:.2f}"])  # fmt: skip
    print(
        table(
            rows,
            [
                "input",
                "files",
                "predict.py images/s",
                "start-up s",
                "(a) classic images/s",
                "vs (a)",
                "(b) decode floor images/s",
                "of (b)",
                "slowdown vs small",
            ],
        )  # fmt: skip
    )


if __name__ == "__main__":
    main()
