"""Benchmark 13: each recipe alone, and auto within its budget, on public datasets unlike ImageNet and on the
shared cats and dogs photos.

Runs train_cnn.py as a user would (`--recipe R`), one dataset after the other, each
recipe alone without a time limit (`--time-budget 0`) and `auto` with the default budget
(or --budget), then scores Test_Set once with `predict.py --evaluate`. Prints a table per
dataset: Test_Set accuracy and balanced accuracy, minutes, peak memory, and what auto
chose; appends every row to bench/out/recipes.csv.

    python bench/datasets.py            # clones and lays out the public datasets in bench/out/datasets
    python bench/recipes.py [--dataset sign_digits ...] [--recipe auto ...] [--budget 5]
"""

import argparse
import csv
import re
import shutil
import subprocess
import sys

from common import OUT, ROOT, machine, photos_dir, read_metadata, run_script, table

DATASETS = ["sign_digits", "clothing", "chest_xray", "cats_dogs"]
RECIPES = ["features", "scratch", "fine-tune", "auto"]


def data_dir(name):
    """The Dataset-layout folder of benchmark dataset `name`, or exit saying how to make it."""
    if name == "cats_dogs":
        return photos_dir()
    folder = OUT / "datasets" / name
    if not (folder / "Training_Set").is_dir():
        sys.exit(f"bench: {folder}/Training_Set not found. Lay it out first: python bench/datasets.py {name}")
    return folder


def evaluate(model_dir, data, *extra):
    """(accuracy, balanced accuracy) of the saved model on Test_Set, as predict.py --evaluate measures them."""
    _, stdout, _ = run_script("predict.py", "--model-dir", model_dir, "--input", data / "Test_Set", "--evaluate",
                              "--output", model_dir / "evaluation.csv", *extra)  # fmt: skip
    accuracy = float(re.search(r"^accuracy: ([0-9.]+)", stdout, re.M).group(1))
    balanced = float(re.search(r"^balanced accuracy: ([0-9.]+)", stdout, re.M).group(1))
    return accuracy, balanced


def without_flip(model_dir, data):
    """Test_Set (accuracy, balanced accuracy) of a model kept with the test-time flip, scored without it: a copy
    of the folder whose model.h5 is the network inside (its digest differs, hence --ignore-checksum)."""
    plain = model_dir / "without_flip"
    plain.mkdir(exist_ok=True)
    shutil.copy(model_dir / "metadata.json", plain)
    code = "import sys; from imgclf import artifacts as a, tta; tta.unwrap(a.load_model(sys.argv[1])).save(sys.argv[2])"
    subprocess.run([sys.executable, "-c", code, model_dir / "model.h5", plain / "model.h5"], check=True, cwd=ROOT,
                   capture_output=True)  # fmt: skip
    return evaluate(plain, data, "--ignore-checksum")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", choices=DATASETS)
    parser.add_argument("--recipe", action="append", choices=RECIPES)
    parser.add_argument("--budget", type=float, help="--time-budget of auto (default: train_cnn.py's own)")
    parser.add_argument("--budget-all", action="store_true", help="give every recipe --budget, not auto alone")
    args = parser.parse_args()
    print(f"Machine: {machine()}", flush=True)
    results = OUT / "recipes.csv"
    for name in args.dataset or DATASETS:
        data = data_dir(name)
        rows = []
        for recipe in args.recipe or RECIPES:
            model_dir = OUT / "recipes" / f"{name}-{recipe}"
            budget = []
            if args.budget is not None and (recipe == "auto" or args.budget_all):
                budget = ["--time-budget", f"{args.budget:g}"]
            elif recipe != "auto":
                budget = ["--time-budget", "0"]
            seconds, output, rss = run_script(
                "train_cnn.py", "--data-dir", data, "--model-dir", model_dir, "--recipe", recipe, *budget
            )
            metadata = read_metadata(model_dir)
            accuracy, balanced = evaluate(model_dir, data)
            chosen = metadata["training"]["recipe"]
            flip = metadata["test_time_flip"]
            if flip["used"]:  # What the flip gave on Test_Set, and on validation where it was decided.
                plain, flipped = flip["validation"]["plain"], flip["validation"]["flipped"]
                chosen += (f" + flip (Test_Set without it {without_flip(model_dir, data)[0]:.2%}; validation "
                           f"{plain['accuracy']:.1%} -> {flipped['accuracy']:.1%})")  # fmt: skip
            board = "; ".join(
                f"{row['recipe']} {row['accuracy']:.1%}" if "accuracy" in row else f"{row['recipe']} skipped"
                for row in metadata["leaderboard"]
            )
            row = [name, recipe, " ".join(budget[1:]) or "default", f"{accuracy:.2%}", f"{balanced:.2%}",
                   f"{seconds / 60:.1f}", f"{rss / 1024:.2f}", chosen, board]  # fmt: skip
            rows.append(row)
            print(" | ".join(row), flush=True)
            new = not results.exists()
            with open(results, "a", newline="") as handle:
                writer = csv.writer(handle)
                if new:
                    writer.writerow(["dataset", "recipe", "budget_min", "test_accuracy", "test_balanced", "minutes",
                                     "peak_rss_gb", "chosen", "validation_leaderboard", "machine"])  # fmt: skip
                writer.writerow([*row, machine()])
        print(f"\n{name} ({data}):\n")
        print(table(rows, ["dataset", "recipe", "budget (min)", "Test_Set accuracy", "balanced", "minutes",
                           "peak RSS (GB)", "kept", "validation leaderboard"]), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
