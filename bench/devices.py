"""Benchmark 6: training images/s on this machine's devices, per architecture and number format, in one run.

train_cnn.py on the shared photos, `--epochs 2`, for `compact` (the default) and `simple` (the
classic network), each with `--mixed-precision on` and `off`, everything else at its default
(`--strategy auto`, `--jit auto`). The rate is training images per second of fitting (from
metadata.json: decoding excluded), so it measures the devices, not the disk. Run it on a GPU
machine to fill in the GPU figures; on a CPU it gives the CPU's.

Usage: python bench/devices.py [--epochs 2] [--strategy auto]
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import machine, photos_dir, read_metadata, run_script, table  # noqa: E402


def rate(data, arch, precision, epochs, strategy):
    with tempfile.TemporaryDirectory() as model_dir:
        _, output, _ = run_script(
            "train_cnn.py", "--data-dir", data, "--model-dir", model_dir, "--arch", arch, "--epochs", epochs,
            "--mixed-precision", precision, "--strategy", strategy,
        )  # fmt: skip
        metadata = read_metadata(model_dir)
    return metadata, output.splitlines()[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--strategy", default="auto")
    args = parser.parse_args()
    data = photos_dir()
    print(f"Machine: {machine()}")
    rows, results = [], {}
    for arch in ("compact", "simple"):
        for precision in ("off", "on"):
            metadata, first_line = rate(data, arch, precision, args.epochs, args.strategy)
            training = metadata["training"]
            results[arch, precision] = training["train_images_per_second"]
            rows.append([arch, metadata["trained_with"], training["replicas"], results[arch, precision]])
            print(first_line)
    print(table(rows, ["architecture", "arithmetic", "replicas", "training images/s"]))
    for arch in ("compact", "simple"):
        print(f"{arch}: mixed precision {results[arch, 'on'] / results[arch, 'off']:.2f}x float32")
    print(f"float32: simple {results['simple', 'off'] / results['compact', 'off']:.2f}x compact")


if __name__ == "__main__":
    main()
