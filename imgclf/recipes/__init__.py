"""Recipes: the ways a classifier is trained from the decoded files, and `auto`, which tries them within
--time-budget, cheapest first, and keeps the one that labels the validation images best (`choice.py`; a test
set never chooses).

Each recipe is a module with NAME, MIN_EPOCHS (as a candidate of `auto`), `network(config)`
(the architecture and image size it trains), `describe(config)` (what it trains, in a line)
and `run(job, done, deadline, min_epochs) -> Result or why it was skipped` (`done`: the
results of the recipes before it), fitting with `job.train_or_restore`; one whose minimum
can be estimated before it starts has `minimum_seconds(job)`, which the candidates before
it leave it:

- features (`features.py`): the pretrained backbone frozen, the head trained on its features: seconds.
- scratch (`scratch.py`): the compact network from random weights, on augmented images.
- fine-tune (`fine_tune.py`): from the trained head, the backbone trained too (batch norm in inference mode).
- larger (`larger.py`, `auto` only): the features recipe on EfficientNet-Lite2, last, on the time left.
"""

import dataclasses
import json
import os
import time

import keras

from imgclf import artifacts, devices, evaluation, fitting, models, runtimes
from imgclf.cli import UsageError
from imgclf.recipes import choice, features, fine_tune, larger, scratch
from imgclf.recipes.job import DONE_FILE, Job, Result, cache_file, remove_caches  # noqa: F401 - the interface

RECIPES = {recipe.NAME: recipe for recipe in (features, scratch, fine_tune, larger)}  # auto tries them in this order
LEADERBOARD_FILE = "leaderboard.json"  # in the checkpoints: the candidates done or skipped, for --resume


def resolve(config, default_arch):
    """`config` with --arch filled in for its --recipe (`compact` for scratch, else `default_arch`), once the
    recipe is known to suit the network; else UsageError naming both flags."""
    if config.recipe == scratch.NAME and config.arch and models.is_pretrained(config.arch) and not config.init_from:
        raise UsageError(
            f"--recipe scratch: --arch {config.arch} starts from ImageNet weights. Leave --arch out (compact), give "
            "compact or simple, or choose another --recipe."
        )
    arch = config.arch or (scratch.ARCH if config.recipe == scratch.NAME else default_arch)
    if config.recipe in (features.NAME, fine_tune.NAME) and not models.is_pretrained(arch):
        raise UsageError(
            f"--recipe {config.recipe}: the {arch} network has no pretrained backbone to "
            f"{'freeze' if config.recipe == features.NAME else 'fine-tune'}. Choose a pretrained --arch (such as "
            f"{default_arch}), or --recipe scratch."
        )
    if config.recipe == scratch.NAME and config.init_from and models.is_pretrained(arch):
        raise UsageError(
            f"--recipe scratch: --init-from {config.init_from} continues a pretrained network, and scratch starts "
            "from random weights. Leave one of them out."
        )
    return dataclasses.replace(config, arch=arch)


def plan(config):
    """The recipes a run of `config` (its --arch resolved) tries, in order; the last one is kept unless `auto`."""
    if not models.is_pretrained(config.arch):
        return [scratch.NAME]
    if config.recipe == "auto":
        # --init-from continues a network: starting one from random weights or another backbone is not a candidate.
        if config.init_from:
            return [features.NAME, fine_tune.NAME]
        # Another backbone is not a candidate beside a given --backbone-weights either.
        tries_larger = config.arch in larger.SMALLER and not config.backbone_weights
        return [name for name in RECIPES if name != larger.NAME or tries_larger]
    return [features.NAME, fine_tune.NAME] if config.recipe == fine_tune.NAME else [config.recipe]


def keeps_images(config):
    """True when a recipe of `config`'s plan trains on the images at --image-size: the first pass keeps them."""
    return models.is_pretrained(config.arch) and fine_tune.NAME in plan(config)


def still_keep(config, split, deadline, skipped, slowdown=1.0):
    """For a first pass that keeps the images for fine-tune: None, or (auto within a budget) the answer to
    `decoding.extract_features`'s `paced`, False when fine-tune could not fit anyway (why: into `skipped`).
    `slowdown`: how many times slower Keras, where fine-tune trains, runs the backbone than the pass does."""
    if not (deadline and config.recipe == "auto" and keeps_images(config)):
        return None

    def answer(seconds_per_image):
        # Time left for the recipes: the rest of the pass (its forward passes are most of it), and as long again in
        # Keras for the evaluation and the report at the end, come off.
        left = deadline - time.time() - (1 + slowdown) * len(split.paths) * seconds_per_image
        why = fine_tune.too_long(len(split.train), len(split.validation), seconds_per_image * slowdown, left)
        if why:
            skipped[fine_tune.NAME] = f"skipped: {why}"
            print(f"Not keeping the images: {fine_tune.NAME} will not fit ({why}).", flush=True)
        return not why

    return answer


def run(job):
    """Runs the recipes of `plan`; returns (the chosen Result, the leaderboard: a dict per recipe).

    `features` has no deadline (its epochs are seconds, and there is always a model); the
    others get the budget's (as candidates of `auto`, an equal share of the time left, which
    `larger` does not take: it gets what they leave) and their own minimum of epochs (alone:
    at least one epoch, whatever the time left).
    """
    config, names = job.config, plan(job.config)
    saved_file = os.path.join(fitting.checkpoint_dir(config), LEADERBOARD_FILE)
    saved = {}
    if os.path.isfile(saved_file):  # --resume: the candidates done or skipped keep their figures and outcome
        with open(saved_file, encoding="utf-8") as handle:
            saved = {row["recipe"]: row for row in json.load(handle)}
    choosing = config.recipe == "auto" and len(names) > 1
    if choosing:
        budget = f"within the {config.time_budget:g}-minute budget" if job.deadline else "(no time budget)"
        print(
            f"Recipes to try {budget}, cheapest first; the best on the validation images is kept:\n"
            + "".join(f"  {name}: {RECIPES[name].describe(config)}\n" for name in names),
            end="",
        )
    results, board, weighted = {}, [], job.sample_weights is not None
    truth = job.split.labels[job.split.validation]
    for position, name in enumerate(names):
        row = {"recipe": name, "network": _network(name, config)}
        why = saved[name]["outcome"] if saved.get(name, {}).get("outcome", "").startswith("skipped") else None
        why = why or (_why_not(job, results) if choosing and results else None) or job.skipped.get(name)
        # larger runs on what the others leave: they share the time left without it.
        sharing = [later for later in names[position:] if later != larger.NAME] or [name]
        deadline = None if name == features.NAME else _deadline(job, sharing if choosing else [name])
        minimum = RECIPES[name].MIN_EPOCHS if choosing else 0
        runtimes.release_memory()  # what the candidate before left with the C library goes back to the system
        result = None if why else _run_one(name, job, results, saved, deadline=deadline, min_epochs=minimum)
        if isinstance(result, str):
            why = f"skipped: {result}"
        if why:
            print(f"{name} {why}.", flush=True)
            board.append({**row, "outcome": why})
        else:
            results[name] = result
            board.append({**row, **result.validation, "seconds": result.seconds})
        artifacts.write_text(saved_file, json.dumps(board, indent=2))
    chosen = choice.best(results.values(), truth, weighted) if choosing else results[names[-1]]
    for row in board:
        if row["recipe"] == chosen.recipe:
            row["outcome"] = "chosen"
        elif "outcome" not in row:
            row["outcome"] = "not chosen" if choosing else "the start of the recipe chosen"
    if choosing and len(results) > 1:
        print(f"\n{choice.verdict(chosen, results.values(), truth, weighted)}", flush=True)
    return chosen, board


def _deadline(job, sharing):
    """A candidate's deadline: an equal share of the time left among the candidates `sharing` it (itself first), so
    a cheap one does not leave a better one no time, and never into the minimum a later one needs (fine-tune's,
    estimated at the first pass's pace); the last one takes all that is left."""
    if job.deadline is None:
        return None
    later = [RECIPES[name] for name in sharing[1:] if name not in job.skipped]
    kept_for_later = sum(recipe.minimum_seconds(job) for recipe in later if hasattr(recipe, "minimum_seconds"))
    share = time.time() + max(0.0, job.deadline - time.time()) / len(sharing)
    return min(share, job.deadline - kept_for_later)


def _why_not(job, results):
    """Why `auto` does not start its next candidate, or None."""
    perfect = [result for result in results.values() if result.validation["accuracy"] == 1]
    if perfect:
        return f"skipped: {perfect[0].recipe} labels every validation image right"
    if job.deadline and time.time() >= job.deadline:
        return f"skipped: the {job.config.time_budget:g}-minute budget was spent"
    return None


def _run_one(name, job, done, saved, **budget):
    """Runs recipe `name`: its Result, scored on the validation images, or why it was skipped."""
    recipe = RECIPES[name]
    print(f"\n== {name}: {recipe.describe(job.config)} ==", flush=True)
    arch, _ = recipe.network(job.config)
    policy, why = devices.precision_choice(job.config.mixed_precision, models.is_depthwise(arch))
    if policy != keras.mixed_precision.global_policy().name:  # bfloat16 on AMX pays for some networks only
        print(f"{arch} computes in {policy} ({why}).", flush=True)
        devices.set_policy(policy)
    started = time.time()
    keras.utils.set_random_seed(job.config.seed)  # Each candidate as it would run alone, whatever ran before it.
    result = recipe.run(job, done, **budget)
    if isinstance(result, str):
        return result
    # features' seconds include the first pass, which computed its features (and kept the images for the others).
    first_pass = job.decoded.seconds if name == features.NAME else 0.0
    result.seconds = saved[name]["seconds"] if name in saved else round(time.time() - started + first_pass, 1)
    result.validation, result.right = score(job, result)
    print(f"{name}: {choice.describe_scores(result.validation)} on the validation images, {result.seconds:.0f} s.")
    return result


def _network(name, config):
    arch, size = RECIPES[name].network(config)
    return f"{arch}, {size} px"


def runner(job, result, count):
    """(a runtimes runner of `result`'s trainee on its inputs, the runtime in a line) for a pass over `count` images:
    a head on features in Keras (a millisecond a batch); a whole network on the runtime of --runtime, exported once
    into the checkpoints (`result.exported`, for the passes after this one and the model's own export) when that
    many images repay it, else in Keras."""
    line = "keras"
    if result.trainee is result.model:
        if result.exported:
            return runtimes.exported_runner(result.exported), f"{runtimes.of_file(result.exported).NAME} (exported)"
        folder = fitting.checkpoint_dir(job.config, result.recipe)
        run, _, line = runtimes.network_runner(result.model, job.config.runtime, folder, count, name="network")
        result.exported = getattr(run, "path", None)
        if result.exported:
            return run, line
    return runtimes.keras_model.runner(devices.inference_model(result.trainee)), line


def score(job, result):
    """`evaluation.validation_scores` of `result` on the validation images (the same for every candidate), and which
    of them it labels right."""
    run, _ = runner(job, result, len(job.split.validation))
    truth, probabilities = evaluation.probabilities_of(run, job.split, job.split.validation, result.inputs)
    return evaluation.validation_scores(truth, probabilities), choice.labeled_right(truth, probabilities)
