"""Benchmark 5: peak memory of training, with the decoded-image cache in RAM and on disk.

Runs train_cnn.py twice on the shared photos for a few epochs: with the default cache
budget (the decoded images fit in RAM) and with a budget below the decoded size (they go
to a file in the model folder). Each run is a fresh process; its peak RSS comes from wait4.

Usage: python bench/memory.py [--epochs 2] [--image-size 0]
"""

import argparse
import tempfile

from common import machine, photos_dir, read_metadata, run_script, table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=0)
    args = parser.parse_args()
    data = photos_dir()
    print(f"Machine: {machine()}")
    rows = []
    for label, budget in (("below the decoded size: cache on disk", 64), ("default: cache in RAM", None)):
        with tempfile.TemporaryDirectory() as model_dir:
            flags = ["--data-dir", data, "--model-dir", model_dir, "--epochs", args.epochs,
                     "--image-size", args.image_size]  # fmt: skip
            if budget is not None:
                flags += ["--cache-mb", budget]
            wall, stdout, peak_mb = run_script("train_cnn.py", *flags)
            cached = next(line for line in stdout.splitlines() if line.startswith("Cached "))
            accuracy = read_metadata(model_dir)["validation"]["accuracy"]
        rows.append([label, budget or "1024 (default)", cached, f"{peak_mb:.0f}", f"{wall:.0f}", f"{accuracy:.1%}"])
    print(table(rows, ["cache", "--cache-mb", "what training printed", "peak RSS MB", "wall s", "Test_Set acc."]))


if __name__ == "__main__":
    main()
