"""Fixtures that write small synthetic images; no test reads the shared photos."""

import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image, ImageDraw

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def class_image(label, seed, size=40):
    """A synthetic RGB image whose class is easy to learn: class 0 has horizontal stripes, class 1 vertical."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    stripes = (np.arange(size) // 4) % 2 == 0
    if label % 2 == 0:
        pixels[stripes, :, label % 3] = 230
    else:
        pixels[:, stripes, label % 3] = 230
    return Image.fromarray(pixels)


def write_class_tree(root, class_names, per_class, size=40, start_seed=0):
    """Writes `root/<class>/img_<i>.png` (and .jpg) images; returns the paths written."""
    paths = []
    for label, name in enumerate(class_names):
        folder = pathlib.Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            suffix = ".png" if i % 2 else ".jpg"
            path = folder / f"img_{i}{suffix}"
            class_image(label, start_seed + 1000 * label + i, size).save(path)
            paths.append(str(path))
    return paths


def _environment():
    # PYTHONUNBUFFERED: output arrives line by line, as on a terminal; no GPU in tests; $PYTHON for shell lines.
    return {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}


def run_script(script, *args, cwd=None, timeout=300, script_dir=ROOT):
    """Runs one of the product's scripts (from `script_dir`) in a fresh Python, as a user would."""
    return subprocess.run(
        [sys.executable, str(pathlib.Path(script_dir) / script), *map(str, args)],
        cwd=cwd or ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_shell(command, cwd, timeout=300):
    """Runs a bash command line in which $PYTHON is the tests' Python; returns the CompletedProcess."""
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=_environment(), capture_output=True, text=True, timeout=timeout
    )


def write_mirror_tree(root, per_class, size=48, seed=0):
    """Grey pictures of an "L" on noise (class `left`: its foot to the right of its bar) and of its mirror image
    (`right`), of random size, place and shade: a task that frozen ImageNet features, which barely tell an image
    from its mirror image, cannot solve, and that networks trained on the pictures (without flips) learn."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(["left", "right"]):
        folder = pathlib.Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            picture = Image.fromarray(rng.normal(128, 30, (size, size)).clip(0, 255).astype(np.uint8), "L")
            draw = ImageDraw.Draw(picture)
            side = int(rng.integers(size // 4, size // 2))
            x, y = (int(value) for value in rng.integers(2, size - side - 2, 2))
            shade = int(rng.integers(0, 60) if rng.random() < 0.5 else rng.integers(200, 256))
            width = max(2, side // 4)
            bar = x if label == 0 else x + side - width
            draw.rectangle([bar, y, bar + width, y + side], fill=shade)
            draw.rectangle([x, y + side - width, x + side, y + side], fill=shade)
            picture.save(folder / f"{name}_{i}.png")
