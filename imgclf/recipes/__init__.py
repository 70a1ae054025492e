"""Recipes: the ways a classifier is trained from the decoded files, and `auto`, which tries them within
--time-budget, cheapest first, and keeps the one that labels the validation images best (a test set never
chooses).

Each recipe is a module with NAME, `describe(config)` (what it trains, in a line) and
`run(job, done) -> Result or why it was skipped` (`done`: the results of the recipes
before it), fitting with `job.train_or_restore`:

- features (`features.py`): the pretrained backbone frozen, the head trained on its features: seconds.
- scratch (`scratch.py`): the compact network from random weights, on augmented images.
- fine-tune (`fine_tune.py`): from the trained head, the backbone trained too (batch norm in inference mode).
"""

import json
import os
import time

import keras
import numpy as np

from imgclf import artifacts, data, fitting, metrics, models, outputs
from imgclf.recipes import features, fine_tune, scratch
from imgclf.recipes.job import DONE_FILE, Job, Result, cache_file, remove_caches  # noqa: F401 - the interface

RECIPES = {recipe.NAME: recipe for recipe in (features, scratch, fine_tune)}  # auto tries them in this order
CHOICES = ["auto", *RECIPES]
LEADERBOARD_FILE = "leaderboard.json"  # in the checkpoints: the candidates done, for --resume


def plan(config):
    """The recipes a run of `config` (its --arch resolved) tries, in order; the last one is kept unless `auto`."""
    if not models.is_pretrained(config.arch):
        return [scratch.NAME]
    if config.recipe == "auto":
        # --init-from continues a network: starting one from random weights is not a candidate then.
        return [features.NAME, fine_tune.NAME] if config.init_from else list(RECIPES)
    return [features.NAME, fine_tune.NAME] if config.recipe == fine_tune.NAME else [config.recipe]


def run(job):
    """Runs the recipes of `plan`; returns (the chosen Result, the leaderboard: a dict per recipe)."""
    config, names = job.config, plan(job.config)
    saved_file = os.path.join(fitting.checkpoint_dir(config), LEADERBOARD_FILE)
    saved = {}
    if os.path.isfile(saved_file):  # --resume: the candidates that finished keep their figures
        with open(saved_file, encoding="utf-8") as handle:
            saved = {row["recipe"]: row for row in json.load(handle)}
    if config.recipe == "auto" and len(names) > 1:
        budget = f"within the {config.time_budget:g}-minute budget" if job.deadline else "(no time budget)"
        print(
            f"Recipes to try {budget}, cheapest first; the best on the validation images is kept:\n"
            + "".join(f"  {name}: {RECIPES[name].describe(config)}\n" for name in names),
            end="",
        )
    results, board, weighted = {}, [], job.sample_weights is not None
    for name in names:
        recipe, row = RECIPES[name], {"recipe": name, "network": _network(name, config)}
        best = _best(results.values(), weighted)
        if config.recipe == "auto" and best and best.validation["accuracy"] == 1 and name not in saved:
            board.append({**row, "outcome": f"skipped: {best.recipe} labels every validation image right"})
            continue
        print(f"\n== {name}: {recipe.describe(config)} ==", flush=True)
        started = time.time()
        keras.utils.set_random_seed(config.seed)  # Each candidate as it would run alone, whatever ran before it.
        result = recipe.run(job, results)
        if isinstance(result, str):
            print(f"{name} skipped: {result}.", flush=True)
            board.append({**row, "outcome": f"skipped: {result}"})
        else:
            result.seconds = saved[name]["seconds"] if name in saved else round(time.time() - started, 1)
            result.validation = score(job, result)
            results[name] = result
            board.append({**row, **result.validation, "seconds": result.seconds})
            print(f"{name}: {describe_scores(result.validation)} on the validation images, {result.seconds:.0f} s.")
        artifacts.write_text(saved_file, json.dumps(board, indent=2))
    chosen = results[names[-1]] if config.recipe != "auto" else _best(results.values(), weighted)
    for row in board:
        if row["recipe"] == chosen.recipe:
            row["outcome"] = "chosen"
        elif "outcome" not in row:
            row["outcome"] = "not chosen" if config.recipe == "auto" else "the start of the recipe chosen"
    if config.recipe == "auto" and len(results) > 1:
        print(f"\n{verdict(chosen, results.values(), weighted)}", flush=True)
    return chosen, board


def _network(name, config):
    arch, size = scratch.network(config) if name == scratch.NAME else (config.arch, config.image_size)
    return f"{arch}, {size} px"


def score(job, result):
    """Accuracy, balanced accuracy and mean cross-entropy of `result` on the validation images."""
    indices = job.split.validation
    batches = data.batches(result.inputs, job.labels, indices, job.config.batch_size)
    probabilities = outputs.class_probabilities(result.trainee.predict(batches, verbose=0))
    truth = job.split.labels[indices]
    predicted, _ = outputs.label_rows(probabilities)
    counts = np.zeros((probabilities.shape[1],) * 2, np.int64)
    np.add.at(counts, (truth, predicted), 1)
    return {
        "accuracy": round(float(np.trace(counts) / counts.sum()), 4),
        "balanced_accuracy": round(metrics.balanced_accuracy(counts), 4),
        "loss": round(float(-np.mean(np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-12, 1)))), 4),
    }


def _measure(weighted):
    """What `auto` maximizes first: accuracy on the validation images, balanced accuracy when classes are
    weighted (then the lower loss)."""
    return "balanced_accuracy" if weighted else "accuracy"


def _key(result, weighted):
    return result.validation[_measure(weighted)], -result.validation["loss"]


def _best(results, weighted):
    results = list(results)
    return max(results, key=lambda result: _key(result, weighted)) if results else None


def describe_scores(scores):
    return f"accuracy {scores['accuracy']:.2%} (balanced {scores['balanced_accuracy']:.2%}), loss {scores['loss']:.3f}"


def verdict(chosen, results, weighted):
    """The line that says which candidate won and by how much."""
    runner_up = _best((result for result in results if result is not chosen), weighted)
    field = _measure(weighted)
    measure = field.replace("_", " ")
    gain = chosen.validation[field] - runner_up.validation[field]
    return (
        f"Chosen: {chosen.recipe} ({chosen.arch}, {chosen.image_size} px), validation {measure} "
        f"{chosen.validation[field]:.2%}: {gain * 100:+.1f} points over {runner_up.recipe} "
        f"({runner_up.validation[field]:.2%}), loss {chosen.validation['loss']:.3f} against "
        f"{runner_up.validation['loss']:.3f}."
    )


def leaderboard_text(board):
    """The leaderboard as report.txt's table."""
    lines = [f"{'recipe':<10} {'network':<26} {'accuracy':>9} {'balanced':>9} {'loss':>7} {'seconds':>8}  outcome"]
    for row in board:
        if "accuracy" in row:
            figures = (
                f"{row['accuracy']:>9.2%} {row['balanced_accuracy']:>9.2%} {row['loss']:>7.3f} {row['seconds']:>8.0f}"
            )
        else:
            figures = f"{'-':>9} {'-':>9} {'-':>7} {'-':>8}"
        lines.append(f"{row['recipe']:<10} {row['network']:<26} {figures}  {row['outcome']}")
    return "\n".join(lines) + "\n"
