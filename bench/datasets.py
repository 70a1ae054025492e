"""Lays out public image datasets unlike ImageNet in the Dataset layout, for bench/recipes.py.

    python bench/datasets.py [--source FOLDER] [--out bench/out/datasets]

Each dataset is a public GitHub repository (its images committed in it): cloned from
GitHub (shallow, into a temporary folder removed afterwards), or read from a copy you have
under --source (a folder holding `<owner>+<name>`, as a clone or a bare git directory).
Nothing is copied into this repository: the images land under --out (ignored by git).

- sign_digits: hands showing the digits 0-9 in sign language, 100x100 colour photos, 2062
  (ardamavi/Sign-Language-Digits-Dataset, Apache-2.0). No test set of its own: a fixed,
  stratified 20% (seed 0) becomes Test_Set.
- clothing: 10 kinds of clothing photographed on plain backgrounds, 3781 photos, imbalanced
  7x (t-shirt 795 training photos, skirt 112) (alexeygrigorev/clothing-dataset-small, CC0):
  its train, validation and test folders.
- chest_xray: chest X-rays, COVID-19, normal and viral pneumonia, 317 (grey pictures, stored as
  RGB JPEG and PNG; imbalanced 1.6x) (Dilara-Benli/covid19_image_classification, from
  Kaggle's "Covid-19 Image Dataset"): its train folder, and its val folder as Test_Set.
"""

import argparse
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}

# name: (repository, {folder in the repository: Dataset part}, test share drawn from Training_Set)
DATASETS = {
    "sign_digits": ("ardamavi/Sign-Language-Digits-Dataset", {"Dataset": "Training_Set"}, 0.2),
    "clothing": (
        "alexeygrigorev/clothing-dataset-small",
        {"train": "Training_Set", "validation": "Validation_Set", "test": "Test_Set"},
        0.0,
    ),
    "chest_xray": (
        "Dilara-Benli/covid19_image_classification",
        {"Covid19-dataset/train": "Training_Set", "Covid19-dataset/val": "Test_Set"},
        0.0,
    ),
}


def archive(repository, folders, source):
    """The tar archive of `folders` of `repository`'s newest commit: from a copy under `source`, else a clone."""
    copies = (
        []
        if source is None
        else [source / repository.replace("/", "+") / "repo", source / repository.replace("/", "+")]
    )
    for folder in (path for copy in copies for path in (copy / ".git", copy)):
        if (folder / "HEAD").is_file():
            return _git_archive(folder, folders)
    with tempfile.TemporaryDirectory() as scratch:
        clone = pathlib.Path(scratch) / "repo"
        subprocess.run(["git", "clone", "--depth", "1", f"https://github.com/{repository}", str(clone)], check=True)
        return _git_archive(clone / ".git", folders)


def _git_archive(git_dir, folders):
    command = ["git", "--git-dir", str(git_dir), "archive", "HEAD", *folders]
    return subprocess.run(command, check=True, capture_output=True).stdout


def lay_out(name, source, out):
    """Writes dataset `name` into `out/name` in the Dataset layout; prints its parts' image counts."""
    repository, folders, test_share = DATASETS[name]
    target = out / name
    shutil.rmtree(target, ignore_errors=True)
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(["tar", "-x", "-C", scratch], input=archive(repository, folders, source), check=True)
        for folder, part in folders.items():
            for class_dir in sorted(path for path in (pathlib.Path(scratch) / folder).iterdir() if path.is_dir()):
                files = sorted(path for path in class_dir.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
                tested = set()
                if test_share and part == "Training_Set":
                    order = np.random.default_rng(0).permutation(len(files))
                    tested = set(order[: round(len(files) * test_share)].tolist())
                for index, path in enumerate(files):
                    destination = target / ("Test_Set" if index in tested else part) / class_dir.name / path.name
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, destination)
    counts = {part.name: sum(1 for _ in part.rglob("*.*")) for part in sorted(target.iterdir())}
    print(f"{name}: {target} " + ", ".join(f"{part} {count}" for part, count in counts.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=pathlib.Path, help="a folder of copies of the repositories (else: clone)")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "out" / "datasets")
    parser.add_argument("names", nargs="*", default=list(DATASETS), help="datasets to lay out (default: all)")
    args = parser.parse_args()
    unknown = [name for name in args.names if name not in DATASETS]
    if unknown:
        sys.exit(f"bench/datasets.py: unknown dataset {unknown[0]}; known: {', '.join(DATASETS)}")
    for name in args.names:
        lay_out(name, args.source, args.out)


if __name__ == "__main__":
    main()
