"""The end of a training run whose winner is a whole network (fine-tune): on ONNX Runtime against Keras.

Trains one dataset with `--recipe fine-tune` twice, one run after the other: `--runtime keras`
and the default (`auto`: ONNX Runtime on CPUs). The end is everything after the recipes: the
test-time flip's choice, the evaluation of the validation and test images, the report (Grad-CAM,
the suspects check over the training images), saving and the export; it starts at the line
"Labeling the validation, test and training images with the fine-tune network on ...". Prints
each run's minutes, the end's seconds, peak RSS, Test_Set accuracy, and the ratios.

Usage: python bench/end_phase.py [--dataset sign_digits] [--epochs 2]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

from common import ROOT, machine, read_metadata, table
from recipes import data_dir

END_LINE = "Labeling the validation, test and training images with the"


def timed_run(args):
    """train_cnn.py with `args`: (wall seconds, seconds from the end's first line to the exit, peak RSS MB, output)."""
    command = [sys.executable, str(ROOT / "train_cnn.py"), *map(str, args)]
    with tempfile.NamedTemporaryFile("r") as peak:
        started, end_started, lines = time.time(), None, []
        process = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", peak.name, *command], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, cwd=ROOT)  # fmt: skip
        for line in process.stdout:
            lines.append(line)
            if end_started is None and line.startswith(END_LINE):
                end_started = time.time()
        process.wait()
        finished = time.time()
        output = "".join(lines)
        if process.returncode != 0 or end_started is None:
            sys.exit(f"bench: train_cnn.py failed ({process.returncode}):\n{output[-3000:]}")
        return finished - started, finished - end_started, int(peak.read().split()[-1]) / 1024, output


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="sign_digits")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    data = data_dir(args.dataset)
    print(f"Machine: {machine()}")
    rows, ends = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for runtime in ("keras", "auto"):
            model_dir = os.path.join(folder, runtime)
            flags = ["--data-dir", data, "--model-dir", model_dir, "--recipe", "fine-tune", "--epochs", args.epochs,
                     "--time-budget", 0, "--runtime", runtime]  # fmt: skip
            wall, end, rss, output = timed_run(flags)
            metadata = read_metadata(model_dir)
            line = next(line for line in output.splitlines() if line.startswith(END_LINE))
            ends[runtime], ran_on = end, line.split(" network on ", 1)[1].split(" (")[0]
            flip = "kept" if metadata["test_time_flip"]["used"] else "not kept"
            rows.append([f"--runtime {runtime}", ran_on, f"{wall / 60:.2f}", f"{end:.0f}", f"{rss:.0f}",
                         f"{metadata['test']['accuracy']:.2%}", flip])  # fmt: skip
    print(f"\n{args.dataset}, --recipe fine-tune --epochs {args.epochs}:")
    print(table(rows, ["run", "the end ran on", "wall min", "the end s", "peak RSS MB", "Test_Set acc.", "flip"]))
    print(f"The end: {ends['keras'] / ends['auto']:.2f}x faster on the default runtime than in Keras.")


if __name__ == "__main__":
    main()
