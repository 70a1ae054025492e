"""Labeling throughput: each runtime a model can be exported to, the classic loop, large photos, a photo library.

Runtimes (the default section): the default model (bench/accuracy.py's) exported to ONNX, LiteRT
float32 and LiteRT int8; for each runtime and Keras, in one run: the model alone (images/s on a
decoded batch), predict.py end to end on Test_Set (images/s, accuracy, labels and probabilities
against Keras's), and the bound that decoding and the model sharing the same cores set.
--classic: predict.py against (a) the classic predict loop and (b) the decode floor; --large adds
12-megapixel JPEGs. --library N: N small images made from the shared photos, labeled by predict.py
with the default runtime, against 2,000 of them: peak RSS and images/s. --cold: one picture, the
whole command, by default and with --runtime keras. --batch-sizes 32 128: predict.py
with Keras at each batch size.

Usage: python bench/predict_throughput.py [--model-dir DIR] [--classic [--large] | --library 100000 |
       --batch-sizes 32 128 | --cold]
"""

import argparse
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import OUT, machine, photos_dir, read_metadata, run_script, table  # noqa: E402


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
    from imgclf import decoding

    started = time.time()
    for _ in decoding.batches(files, size, batch_size=64):
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


def exported_copy(model_dir, folder):
    """A copy of the model folder with model.onnx, model.tflite and model_int8.tflite exported into it."""
    copy = os.path.join(folder, "model")
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "logs", "saved_model", "*.tflite"))
    for fmt in ("onnx", "litert", "litert-int8"):
        wall, _, _ = run_script("predict.py", "--model-dir", copy, "--export", fmt)
        print(f"  exported {fmt} in {wall:.0f} s")
    return copy


def model_alone(model_file, images, repeats, mixed_precision="off"):
    """Images/s of the runtime on decoded batches (the model's work alone, all cores)."""
    from imgclf import artifacts, devices, runtimes

    if runtimes.is_exported(model_file):
        run = runtimes.exported_runner(model_file)
    else:
        run = runtimes.keras_model.runner(devices.inference_model(artifacts.load_model(model_file), mixed_precision))
    run(images)  # warm-up: compilation, allocation
    started = time.time()
    for _ in range(repeats):
        run(images)
    return repeats * len(images) / (time.time() - started)


def labeled(output):
    import csv

    with open(output, newline="", encoding="utf-8") as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


def end_to_end(model_args, test_set, folder, name, *extra):
    """predict.py on Test_Set's files: (labeling images/s, whole-command images/s, accuracy, rows by path, peak RSS
    MB, the runtime line)."""
    output = os.path.join(folder, f"{name}.csv")
    files = [os.path.join(test_set, label, name) for label in os.listdir(test_set)
             for name in os.listdir(os.path.join(test_set, label))]  # fmt: skip
    wall, stdout, rss = run_script("predict.py", *model_args, "--input", test_set, "--output", output, *extra)
    line = next(line for line in stdout.splitlines() if line.startswith("Labeled "))
    rate = float(line.split("(")[1].split(" images/s")[0])
    rows = labeled(output)
    accuracy = sum(row["label"] == os.path.basename(os.path.dirname(path)) for path, row in rows.items()) / len(rows)
    runtime = next((line for line in stdout.splitlines() if line.startswith("Runtime: ")), "?")
    return rate, len(files) / wall, accuracy, rows, rss, runtime


def runtimes_table(model_dir, batch=32, repeats=8):
    import numpy as np

    from imgclf import decoding, devices, folders

    test_set = photos_dir() / "Test_Set"
    files = folders.list_files(test_set)
    size = read_metadata(model_dir)["image_size"]
    print(f"Runtimes: {model_dir} at {size}x{size}, {len(files)} Test_Set photos, batches of {batch}.")
    floor = decode_floor(files, size)
    images = next(decoding.batches(files[:batch], size, batch)).images
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        copy = exported_copy(model_dir, folder)
        folder_args = ["--model-dir", copy]
        runs = [("Keras float32 (--runtime keras)", "model.h5", [*folder_args, "--runtime", "keras"])]
        if devices.cpu_has_amx():
            runs.append(("Keras bfloat16", "model.h5", [*folder_args, "--runtime", "keras", "--mixed-precision", "on"]))
        runs += [("default (--runtime auto)", "model.onnx", folder_args),
                 ("LiteRT float32 (--runtime litert)", "model.tflite", [*folder_args, "--runtime", "litert"]),
                 ("LiteRT int8 (--model model_int8.tflite)", "model_int8.tflite",
                  ["--model", os.path.join(copy, "model_int8.tflite")])]  # fmt: skip
        reference = None
        for name, model, model_args in runs:
            model_file = os.path.join(copy, model)
            alone = model_alone(model_file, images, repeats, "on" if "bfloat16" in name else "off")
            rate, whole, accuracy, rows_by_path, rss, runtime = end_to_end(
                model_args, test_set, folder, model.replace(".", "_") + str(len(rows))
            )
            print(f"  {name}: {runtime}")
            reference = reference or (whole, accuracy, rows_by_path)
            same = np.mean([rows_by_path[p]["label"] == row["label"] for p, row in reference[2].items()])
            gap = max(
                abs(float(rows_by_path[p][c]) - float(row[c]))
                for p, row in reference[2].items()
                for c in row
                if c.startswith("prob_")
            )
            bound = 1 / (1 / floor + 1 / alone)
            rows.append([name, f"{alone:.0f}", f"{rate:.0f}", f"{rate / bound:.0%}", f"{whole:.0f}",
                         f"{whole / reference[0]:.2f}x", f"{accuracy:.2%}", f"{same:.2%}", f"{gap:.5f}",
                         f"{rss:.0f}"])  # fmt: skip
    if not devices.cpu_has_amx():
        print("Keras bfloat16: not run: this CPU has no AMX, where bfloat16 is slower than float32 (section 6).")
    print(f"Decode floor (decoding and resizing alone, all cores): {floor:.0f} images/s.")
    headers = ["runtime", "model alone images/s", "labeling images/s", "of bound 1/(1/decode+1/model)",
               "whole command images/s", "whole vs Keras", "Test_Set accuracy", "same label as Keras",
               "max prob difference", "peak RSS MB"]  # fmt: skip
    print(table(rows, headers))


def cold_start(model_dir, repeats=5):
    """One picture, the whole `predict.py` command, by default and with --runtime keras: median wall seconds."""
    import statistics

    picture = next((photos_dir() / "Test_Set").glob("*/*"))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        copy = os.path.join(folder, "model")
        shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "logs", "saved_model"))
        output = os.path.join(folder, "one.csv")
        run_script("predict.py", "--model-dir", copy, "--input", picture, "--output", output)  # writes model.onnx
        for name, extra in (("default (--runtime auto)", []), ("--runtime keras", ["--runtime", "keras"])):
            walls = [run_script("predict.py", "--model-dir", copy, "--input", picture, "--output", output, *extra)
                     for _ in range(repeats)]  # fmt: skip
            rows.append([name, f"{statistics.median(wall for wall, _, _ in walls):.2f}",
                         f"{max(rss for _, _, rss in walls):.0f}"])  # fmt: skip
    print(f"One picture ({picture.name}), whole command, median of {repeats}:")
    print(table(rows, ["predict.py", "seconds", "peak RSS MB"]))


def batch_size_table(model_dir, sizes):
    """predict.py (Keras) end to end on Test_Set at each --batch-size: images/s and peak RSS."""
    test_set = photos_dir() / "Test_Set"
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            model_file = os.path.join(model_dir, "model.h5")
            rate, _, _, _, rss, _ = end_to_end(
                ["--model", model_file], test_set, folder, f"batch_{size}", "--batch-size", size
            )
            rows.append([size, f"{rate:.0f}", f"{rss:.0f}"])
    print(table(rows, ["--batch-size", "predict.py images/s", "peak RSS MB"]))


def make_library(count, folder, sources=1000, side=64):
    """Writes `count` small JPEGs into `folder` (1000 per sub-folder), made from shared photos: each
    photo at `side` px, shifted a pixel and mirrored so the files differ. Returns the folder."""
    from PIL import Image

    originals = []
    for path in sample_files(photos_dir(), sources):
        with Image.open(path) as image:
            originals.append(image.convert("RGB").resize((side + 8, side + 8), Image.Resampling.BILINEAR))
    for i in range(count):
        image = originals[i % len(originals)]
        shift = (i // len(originals)) % 8
        variant = image.crop((shift, shift, shift + side, shift + side))
        if (i // len(originals) // 8) % 2:
            variant = variant.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        sub = os.path.join(folder, f"{i // 1000:04d}")
        os.makedirs(sub, exist_ok=True)
        variant.save(os.path.join(sub, f"photo_{i:06d}.jpg"), quality=85)
    return folder


def library_table(model_dir, count):
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        copy = os.path.join(folder, "model")
        shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "logs", "saved_model"))
        started = time.time()
        library = make_library(count, os.path.join(folder, "library"))
        print(f"Library: {count} JPEGs of 64x64 px made in {time.time() - started:.0f} s.")
        for subset in (2000, count):
            folders_needed = [os.path.join(library, f"{i:04d}") for i in range(subset // 1000)]
            output = os.path.join(folder, "library.csv")
            wall, stdout, rss = run_script("predict.py", "--model-dir", copy, "--input", *folders_needed,
                                           "--output", output)  # fmt: skip
            line = next(line for line in stdout.splitlines() if line.startswith("Labeled "))
            rate = float(line.split("(")[1].split(" images/s")[0])
            with open(output, encoding="utf-8") as handle:
                written = sum(1 for _ in handle) - 1
            rows.append([f"{subset:,}", f"{written:,}", f"{rate:.0f}", f"{wall / 60:.1f}", f"{rss:.0f}"])
    print(table(rows, ["files", "CSV rows", "images/s", "wall minutes", "peak RSS MB"]))


def classic_table(args):
    size = read_metadata(args.model_dir)["image_size"]
    model_file = os.path.join(args.model_dir, "model.h5")
    files = sample_files(photos_dir(), args.count)
    print(f"Model: {model_file}, {size}x{size}; {len(files)} photos.")
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(OUT / "model_default"), help="default: bench/accuracy.py's model")
    parser.add_argument("--classic", action="store_true", help="predict.py against the classic loop and decode floor")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--classic-sample", type=int, default=200)
    parser.add_argument("--large", action="store_true", help="--classic: also on 12-megapixel JPEGs")
    parser.add_argument("--large-count", type=int, default=200, help="how many 12-megapixel JPEGs to make")
    parser.add_argument("--library", type=int, default=0, help="label this many small images, against 2,000")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="predict.py with Keras at each of these batch sizes")
    parser.add_argument("--cold", action="store_true", help="one picture: the whole command, default against Keras")
    args = parser.parse_args()
    print(f"Machine: {machine()}")
    if args.library:
        library_table(args.model_dir, args.library)
    elif args.batch_sizes:
        batch_size_table(args.model_dir, args.batch_sizes)
    elif args.classic:
        classic_table(args)
    elif args.cold:
        cold_start(args.model_dir)
    else:
        runtimes_table(args.model_dir)


if __name__ == "__main__":
    main()
