"""Training and labeling on the fast runtime against a baseline commit (before it), side by side on one machine.

Each round trains the shared cats and dogs with `--recipe features` (the frozen-features
default before `auto`) in a checkout of the baseline and in this one, one after the other,
then with the default `auto` within `--budget` minutes; every model then labels Test_Set
with its own `predict.py`. Prints wall minutes, Test_Set accuracy, peak RSS, the ratios,
and which candidate `auto` kept.

Usage: python bench/runtime_speedup.py [--baseline 9eecf7d] [--budget 5] [--rounds 1]
"""

import argparse
import os
import subprocess
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import ROOT, machine, photos_dir, read_metadata, run_script, table  # noqa: E402


def train(root, data, model_dir, *args):
    """train_cnn.py of the checkout at `root`: (wall seconds, peak RSS MB, metadata)."""
    wall, _, rss = run_script("train_cnn.py", "--data-dir", data, "--model-dir", model_dir, *args, root=root)
    return wall, rss, read_metadata(model_dir)


def label(root, model_dir, test_set, output):
    """predict.py of the checkout at `root` on Test_Set: (wall seconds, peak RSS MB)."""
    wall, _, rss = run_script(
        "predict.py", "--model-dir", model_dir, "--input", test_set, "--output", output, root=root
    )
    return wall, rss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="9eecf7d", help="the commit to compare with (before the fast runtime)")
    parser.add_argument("--budget", type=float, default=5.0, help="--time-budget of the auto runs (0: leave them out)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    data = photos_dir()
    print(f"Machine: {machine()}")
    with tempfile.TemporaryDirectory() as folder:
        baseline = os.path.join(folder, "baseline")
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", baseline, args.baseline],
                       check=True, capture_output=True)  # fmt: skip
        try:
            rows = []
            settings = [("--recipe features", ["--recipe", "features"])]
            if args.budget:
                settings.append((f"auto, --time-budget {args.budget:g}", ["--time-budget", str(args.budget)]))
            for round_number in range(args.rounds):
                for name, flags in settings:
                    figures = {}
                    for side, root in (("baseline", baseline), ("this", ROOT)):
                        model_dir = os.path.join(folder, f"{side}-{round_number}-{len(rows)}")
                        wall, rss, metadata = train(root, data, model_dir, *flags)
                        output = os.path.join(folder, f"{side}.csv")
                        label_wall, label_rss = label(root, model_dir, data / "Test_Set", output)
                        figures[side] = (wall, rss, metadata, label_wall, label_rss)
                        print(f"  {name}, {side}: {wall / 60:.2f} min, test {metadata['test']['accuracy']:.2%}, "
                              f"kept {metadata['training']['recipe']}", flush=True)  # fmt: skip
                    (old, old_rss, old_meta, old_label, old_label_rss) = figures["baseline"]
                    (new, new_rss, new_meta, new_label, new_label_rss) = figures["this"]
                    rows.append([
                        name, f"{old / 60:.2f}", f"{new / 60:.2f}", f"{old / new:.2f}x",
                        f"{old_meta['test']['accuracy']:.2%}", f"{new_meta['test']['accuracy']:.2%}",
                        f"{old_meta['training']['recipe']} / {new_meta['training']['recipe']}",
                        f"{old_rss / 1024:.2f} / {new_rss / 1024:.2f}",
                        f"{old_label:.1f} / {new_label:.1f} ({old_label / new_label:.2f}x)",
                        f"{old_label_rss / 1024:.2f} / {new_label_rss / 1024:.2f}",
                    ])  # fmt: skip
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", baseline], capture_output=True)
    print(f"Baseline {args.baseline} against this checkout, cats and dogs ({data}):")
    headers = ["training", "baseline min", "this min", "speed-up", "baseline Test_Set", "this Test_Set",
               "kept (baseline / this)", "peak RSS GB", "predict.py on Test_Set s",
               "predict.py peak RSS GB"]  # fmt: skip
    print(table(rows, headers))


if __name__ == "__main__":
    main()
