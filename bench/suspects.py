"""Are the possible label errors (suspect_labels.csv) trustworthy? Real training runs on the shared photos.

    python bench/suspects.py            # 6 training runs, about 15 minutes on 2 cores

Each run is `train_cnn.py` with its defaults on a folder of links to the shared photos:
- 120 cats + 40 dogs (3 seeds): no label is wrong, so every flag is a false accusation;
- 2000 photos (1000 + 1000) with 20 labels flipped on purpose (a cat filed under Dogs and so on),
  and 1000 cats + 200 dogs with 20 flipped: how many planted flips the list finds, and what else;
- 2000 photos at --image-size 32 (a model far from perfect, as on hard medical images), no flips:
  how many flags, against the number the report says chance alone gives.
Prints one row per run: validation accuracy, flags, planted flips found, and the report's chance figure.
"""

import csv
import json
import os
import pathlib
import random
import tempfile

from common import machine, photos_dir, run_script, table


def _dataset(root, cats, dogs, flips, seed):
    """Links `cats` + `dogs` shared training photos into root/Training_Set, `flips` of them in the wrong folder."""
    source = photos_dir() / "Training_Set"
    rng = random.Random(seed)
    counts = {"Cats": cats, "Dogs": dogs}
    chosen = {name: rng.sample(sorted(os.listdir(source / name)), count) for name, count in counts.items()}
    flipped = set()
    pool = [(name, photo) for name, photos in chosen.items() for photo in photos]
    for name, photo in rng.sample(pool, flips):
        flipped.add(f"{name}/{photo}")
    for name, photos in chosen.items():
        for photo in photos:
            folder = ("Dogs" if name == "Cats" else "Cats") if f"{name}/{photo}" in flipped else name
            os.makedirs(root / "Training_Set" / folder, exist_ok=True)
            os.symlink(source / name / photo, root / "Training_Set" / folder / photo)
    return {photo.split("/")[1] for photo in flipped}


def run(name, cats, dogs, flips=0, seed=1337, extra=()):
    with tempfile.TemporaryDirectory() as folder:
        root = pathlib.Path(folder)
        flipped = _dataset(root / "Dataset", cats, dogs, flips, seed)
        model_dir = root / "models"
        seconds, output, _ = run_script(
            "train_cnn.py", "--data-dir", root / "Dataset", "--model-dir", model_dir, "--seed", seed, *extra
        )
        metadata = json.loads((model_dir / "metadata.json").read_text())
        with open(model_dir / "suspect_labels.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        line = next(line for line in output.splitlines() if line.startswith("Possible label errors"))
        chance = line.split("chance alone gives ")[1].split(" flag(s)")[0]
        found = sum(1 for row in rows if os.path.basename(row["path"]) in flipped)
        for row in rows:
            if os.path.basename(row["path"]) not in flipped:  # to look at: a real oddity, or a false accusation?
                print(f"  {name}: flagged {row['label']}/{os.path.basename(row['path'])} ({row['judged_by']})")
        return [
            name, f"{metadata['validation']['accuracy']:.3f}", len(rows), f"{found}/{flips}" if flips else "-",
            len(rows) - found, chance, f"{seconds:.0f}",
        ]  # fmt: skip


def main():
    print(f"Machine: {machine()}")
    rows = [run(f"120 cats + 40 dogs, seed {seed}", 120, 40, seed=seed) for seed in (1, 2, 3)]
    rows.append(run("1000 + 1000, 20 flipped", 1000, 1000, flips=20))
    rows.append(run("1000 cats + 200 dogs, 20 flipped", 1000, 200, flips=20))
    rows.append(run("1000 + 1000 at 32 px, none flipped", 1000, 1000, extra=("--image-size", "32")))
    headers = ["run", "validation accuracy", "flags", "planted flips found", "other flags", "by chance (report)",
               "seconds"]  # fmt: skip
    print(table(rows, headers))


if __name__ == "__main__":
    main()
