"""Fixtures that write small synthetic images; no test reads the shared photos."""

import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image

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
