"""bfloat16 against float32 on this CPU, side by side in one run, per network: the forward pass (what a frozen
pass or labeling in Keras runs) and a training step (fine-tuning's for a pretrained network: every layer but
batch normalization; the whole network for compact), and ONNX Runtime's float32 forward pass beside them.

It is what `--mixed-precision auto` rests on (imgclf/devices.py): on CPUs with AMX, bfloat16 for networks of plain
convolutions, float32 for those of depthwise ones. Without AMX bfloat16 is slower for every network.

    python bench/precision.py [--batch-size 16] [--steps 8]
"""

import argparse
import tempfile
import time

import keras
import numpy as np
from common import machine
from fine_tune_speed import fine_tune_rate, forward_rate

from imgclf import devices, models, runtimes

NETWORKS = (("efficientnet_lite0", 224), ("compact", 96))


def onnx_rate(network, images, batch_size, steps):
    """ONNX Runtime's forward images/s over `network` exported, timed as `forward_rate` times Keras."""
    batch = images[:batch_size].astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        run, _, _ = runtimes.network_runner(network, "onnx", folder, 10**6)
        run(batch)  # allocates its arena
        started = time.perf_counter()
        for _ in range(steps):
            run(batch)
        return steps * batch_size / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    rows = []
    for arch, size in NETWORKS:
        images = np.random.default_rng(0).integers(0, 256, (args.batch_size * 4, size, size, 3), dtype=np.uint8)
        rates = {}
        for policy in ("float32", "mixed_bfloat16"):
            devices.set_policy(policy)
            keras.utils.set_random_seed(0)
            model = models.build_model(arch, size, 2)
            network = models.backbone(model) or model
            rates[policy] = (
                forward_rate(network, images, args.batch_size, args.steps),
                fine_tune_rate(model, images, args.batch_size, args.steps, None),
            )
            if policy == "float32":
                onnx = onnx_rate(network, images, args.batch_size, args.steps)
        devices.set_policy("float32")
        (forward32, train32), (forward16, train16) = rates["float32"], rates["mixed_bfloat16"]
        rows.append(f"| {arch}, {size} px | {forward32:.1f} | {forward16:.1f} ({forward16 / forward32:.2f}x) | "
                    f"{onnx:.1f} | {train32:.1f} | {train16:.1f} ({train16 / train32:.2f}x) |")  # fmt: skip
    print(f"Machine: {machine()}; AMX: {devices.cpu_has_amx()}")
    print(f"Batch {args.batch_size}, {args.steps} timed steps each; images/s:")
    print("| network | forward, Keras float32 | forward, Keras bfloat16 | forward, ONNX Runtime float32 | "
          "training step, float32 | training step, bfloat16 |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
