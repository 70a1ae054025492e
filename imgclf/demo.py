"""A small, deterministic, synthetic demo dataset: cartoon cats and dogs drawn with Pillow.

These are drawings, not photos: they exist so that a fresh clone can train and
predict in about a minute. Cats have pointed upright ears and whiskers; dogs have
long hanging ears and a tongue. Colours, sizes, positions, backgrounds and tilt vary.

Run `python -m imgclf.demo [DATA_DIR]`; a folder that already holds images is left alone.
"""

import os
import random
import sys

from PIL import Image, ImageDraw, ImageFilter

from imgclf import folders

SIZE = 96
FUR = [(230, 140, 50), (90, 90, 90), (240, 240, 235), (150, 100, 60), (40, 35, 30), (200, 180, 140)]


def _color(rng, base, spread=25):
    return tuple(max(0, min(255, c + rng.randint(-spread, spread))) for c in base)


def draw_animal(kind, rng):
    """One cartoon `kind` ('cat' or 'dog') as a SIZE x SIZE RGB image."""
    canvas = SIZE * 2  # Drawn at twice the size, then shrunk, for smooth edges.
    background = _color(rng, (rng.randint(60, 220), rng.randint(60, 220), rng.randint(60, 220)), 0)
    image = Image.new("RGB", (canvas, canvas), background)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(0, 6)):  # Background clutter.
        x, y, r = rng.randint(0, canvas), rng.randint(0, canvas), rng.randint(5, 30)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_color(rng, background, 60))
    fur = _color(rng, rng.choice(FUR))
    dark = tuple(c // 3 for c in fur)
    radius = rng.randint(38, 60)
    cx = rng.randint(radius + 20, canvas - radius - 20)
    cy = rng.randint(radius + 30, canvas - radius - 10)
    if kind == "cat":
        for side in (-1, 1):  # Pointed ears standing up.
            base_x = cx + side * radius * 0.55
            tip = (base_x + side * radius * rng.uniform(0.05, 0.3), cy - radius * rng.uniform(1.35, 1.7))
            draw.polygon(
                [(base_x - radius * 0.4, cy - radius * 0.6), (base_x + radius * 0.4, cy - radius * 0.6), tip],
                fill=fur,
                outline=dark,
            )
    else:
        for side in (-1, 1):  # Long ears hanging beside the head.
            ear_x = cx + side * radius * 0.95
            draw.ellipse((ear_x - radius * 0.3, cy - radius * 0.7, ear_x + radius * 0.3, cy + radius * 0.9), fill=dark)
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fur, outline=dark)
    eye_y = cy - radius * 0.2
    for side in (-1, 1):
        ex = cx + side * radius * 0.38
        draw.ellipse((ex - 7, eye_y - 7, ex + 7, eye_y + 7), fill=(20, 20, 20))
        draw.ellipse((ex - 2, eye_y - 4, ex + 2, eye_y), fill=(250, 250, 250))
    if kind == "cat":
        draw.polygon([(cx - 6, cy + 8), (cx + 6, cy + 8), (cx, cy + 15)], fill=(230, 120, 140))
        for side in (-1, 1):
            for dy in (-5, 3, 11):
                draw.line((cx + side * 12, cy + 14, cx + side * radius * 1.2, cy + 14 + dy * 1.5), fill=dark, width=2)
    else:
        snout = radius * 0.45
        draw.ellipse((cx - snout, cy + 2, cx + snout, cy + snout * 1.4), fill=_color(rng, fur, 40))
        draw.ellipse((cx - 9, cy + 4, cx + 9, cy + 16), fill=(15, 15, 15))
        if rng.random() < 0.7:
            draw.ellipse((cx - 7, cy + snout * 1.1, cx + 7, cy + snout * 1.1 + 18), fill=(230, 90, 110))
    image = image.rotate(rng.uniform(-20, 20), resample=Image.Resampling.BICUBIC, fillcolor=background)
    image = image.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))


def has_images(data_dir):
    """True when `data_dir` already holds any file (so the demo must not touch it)."""
    if not os.path.isdir(data_dir):
        return False
    names = (os.path.basename(path).lower() for path in folders.list_files(data_dir))
    return any(not name.endswith((".md", ".txt")) for name in names)


def make_demo_dataset(data_dir, train_per_class=300, test_per_class=60, predict_count=20, seed=0):
    """Writes Training_Set/{Cats,Dogs}, Test_Set/{Cats,Dogs} and Predict/ under `data_dir`."""
    rng = random.Random(seed)
    plan = [("Training_Set", train_per_class), ("Test_Set", test_per_class)]
    for split, count in plan:
        for kind, folder in (("cat", "Cats"), ("dog", "Dogs")):
            os.makedirs(os.path.join(data_dir, split, folder), exist_ok=True)
            for i in range(count):
                draw_animal(kind, rng).save(os.path.join(data_dir, split, folder, f"{kind}.{i}.jpg"), quality=90)
    os.makedirs(os.path.join(data_dir, "Predict"), exist_ok=True)
    for i in range(predict_count):
        kind = "cat" if i % 2 == 0 else "dog"
        draw_animal(kind, rng).save(os.path.join(data_dir, "Predict", f"{kind}_{i:02d}.png"))


def main(argv):
    data_dir = argv[0] if argv else "Dataset"
    if has_images(data_dir):
        print(f"{data_dir} already holds images: training on them (the demo set is made only for an empty folder).")
        return 0
    make_demo_dataset(data_dir)
    print(f"Wrote a synthetic demo dataset (cartoon cats and dogs, not photos) to {data_dir}/.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
