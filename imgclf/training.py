"""Training, from class folders to a saved model and its reports."""

import dataclasses
import json
import os
import platform
import shutil
import sys
import time

import keras
import numpy as np
import PIL
import tensorflow as tf

from imgclf import (
    artifacts,
    decoding,
    devices,
    diagnosis,
    distribute,
    evaluation,
    export,
    fitting,
    folders,
    models,
    outputs,
    recipes,
    runtimes,
    splits,
    tta,
)
from imgclf.cli import UsageError

SUMMARY_FILE = "summary.txt"
PASS_FILE = "first_pass.npz"  # in the checkpoints: a frozen backbone's features, kept for --resume
LOGS = fitting.LOGS
# Every report a training run writes beside its model: committed together with the model, and an earlier
# model's copy removed when this run wrote none, so a folder never mixes two runs.
REPORT_FILES = [
    splits.SKIPPED_FILE, SUMMARY_FILE, splits.SPLITS_FILE, LOGS, "history.csv", "report.txt", "training_curves.png",
    "confusion_matrix.png", "roc_curve.png", "pr_curve.png", *diagnosis.REPORT_FILES,
]  # fmt: skip
PLACEMENT = ("strategy", "workers", "worker_index")


def library_versions():
    """Versions of what the model was made with, for metadata.json."""
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }


def resolve_config(config):
    """Fills in the architecture and image size: as given, the architecture's own, or with --init-from the
    earlier model's (which a differing --arch or --image-size cannot change: one rule for both)."""
    if config.backbone_weights:  # Absolute, so that --resume finds it from any folder.
        config = dataclasses.replace(config, backbone_weights=os.path.abspath(config.backbone_weights))
    if config.init_from:
        model_file = os.path.join(config.init_from, artifacts.MODEL_FILE)
        if not os.path.isfile(model_file):
            raise UsageError(f"--init-from {config.init_from}: no {artifacts.MODEL_FILE} there. Give a model folder.")
        earlier = artifacts.read_metadata(model_file)
        # A converted Keras 2 model has no registered architecture; it keeps --arch's training rules.
        registered = earlier["architecture"] in models.ARCHITECTURES
        arch = earlier["architecture"] if registered else config.arch or config.DEFAULT_ARCH
        clashes = [
            (flag, given)
            for flag, given, kept in (
                ("--arch", config.arch, arch),
                ("--image-size", config.image_size, earlier["image_size"]),
                ("--backbone-weights", config.backbone_weights or None, None),
            )
            if given is not None and given != kept
        ]
        if clashes:
            flag, given = clashes[0]
            raise UsageError(
                f"{flag} {given}: --init-from {config.init_from} continues its {earlier['architecture']} network at "
                f"{earlier['image_size']} px with its own weights, so its architecture and image size are kept. "
                f"Leave {flag} out, or train without --init-from."
            )
        return recipes.resolve(dataclasses.replace(config, arch=arch, image_size=earlier["image_size"]), arch)
    config = recipes.resolve(config, config.DEFAULT_ARCH)
    if config.image_size is None:
        config = dataclasses.replace(config, image_size=models.NATIVE_IMAGE_SIZE[config.arch])
    if config.backbone_weights and not models.is_pretrained(config.arch):
        raise UsageError(
            f"--backbone-weights: --arch {config.arch} is trained from scratch and has no pretrained weights. Leave "
            "--backbone-weights out, or choose a pretrained --arch."
        )
    return config


def train(config):
    """Trains `config.arch` on `config.data_dir` and writes the model and its reports to `config.model_dir`."""
    config = resolve_config(config)
    # Multi-worker needs its strategy before TensorFlow starts its runtime.
    strategy = distribute.make_strategy(config.strategy, config.workers, config.worker_index)
    if not distribute.is_chief(strategy):  # Only the chief writes model files; the others keep their resume state here.
        worker_dir = os.path.join(config.model_dir, f"worker-{distribute.worker_index(strategy)}")
        os.makedirs(worker_dir, exist_ok=True)
        config = dataclasses.replace(config, model_dir=worker_dir)
    config = resumed_config(config)
    started = time.time()
    keras.utils.set_random_seed(config.seed)

    split = splits.scan(config)  # Before --model-dir is made: a wrong folder layout leaves nothing behind.
    evaluation.check_threshold_flags(config, split.class_names)
    made_model_dir = not os.path.isdir(config.model_dir)
    folders.check_writable_folder(config.model_dir, "--model-dir")
    with artifacts.one_writer(config.model_dir, "--model-dir"):  # A second run into this folder is refused.
        return _train(config, strategy, split, started, made_model_dir)


def _train(config, strategy, split, started, made_model_dir):
    """Decodes, runs the recipes, evaluates and reports, then commits the model and its reports to --model-dir."""
    start_checkpoints(config)  # Only once the data is known to be there: never lose a resumable run to a typo.
    num_classes = len(split.class_names)
    policy, why = devices.precision_choice(config.mixed_precision, models.is_depthwise(config.arch))
    for warning in devices.unusable_gpu_warnings():
        print(warning, file=sys.stderr)
    print(f"Training on {devices.describe()}: {distribute.describe(strategy)}, {policy} arithmetic ({why}).")
    print(
        f"Classes ({num_classes}): {', '.join(split.class_names)}. Found "
        f"{len(split.train)} training and {len(split.validation)} validation files ({split.validation_source})"
        + (f", {len(split.test)} test files ({split.test_source}), scored once at the end." if len(split.test) else ".")
    )
    color_mode = splits.color_mode_of(split)
    class_weights = outputs.class_weights(split.labels[split.train], num_classes, config.class_weight)
    print(describe_class_weights(class_weights, split, config.class_weight))
    deadline = started + config.time_budget * 60 if config.time_budget else None
    if deadline and distribute.is_multi_worker(strategy):  # Workers timing apart could plan apart: no budget.
        print("--time-budget: not applied across several workers; every recipe runs its epochs.")
        deadline = None
    try:
        devices.set_policy(policy)
        job, copies, copies_seconds = _prepare(config, strategy, split, class_weights, deadline, color_mode)
        split, decoded = job.split, job.decoded
        chosen, board = recipes.run(job)
        policy = devices.precision_policy(config.mixed_precision, models.is_depthwise(chosen.arch))
        history = chosen.history
        fitting.stage_history(config, chosen.recipe)
        config = dataclasses.replace(config, arch=chosen.arch, image_size=chosen.image_size)
        devices.set_policy("float32")
        if not distribute.is_chief(strategy):
            print(f"Worker finished training; the chief writes the model. Resume state kept in {config.model_dir}.")
            return 0
        # What is saved runs on any machine: float32, and outside any distribution strategy.
        model = devices.with_policy(chosen.model, "float32", copy=distribute.is_distributed(strategy))
        # Evaluate as predict.py will label, so the report matches what users get (the head on the
        # backbone's features computes exactly what the whole network does).
        artifacts.write_text(artifacts.staged(config.model_dir, SUMMARY_FILE), models.summary_text(model))
        trainee = model if chosen.trainee is chosen.model else models.backbone_and_head(model)[1]
        chosen = dataclasses.replace(chosen, model=model, trainee=trainee)
        # The flip's choice, the evaluation and the suspects check label the images about this many times over.
        run, line = recipes.runner(job, chosen, len(split.paths) + 2 * len(split.validation))
        if trainee is model:
            print(f"Labeling the validation, test and training images with the {chosen.recipe} network on {line}.")
        chosen, flip, run = tta.choose(job, chosen, run)
        model = chosen.model  # with the test-time flip built in when it was kept
        scored = evaluation.evaluate(run, config, split, chosen.inputs, history, recipes.choice.leaderboard_text(board))
        threshold, how, figures = scored["threshold"], scored["how"], scored["figures"]
    except Exception as error:
        resumable = _has_progress(config)
        # A fresh run that stopped on bad data, or failed before its first epoch, has nothing to resume.
        if not config.resume and (isinstance(error, UsageError) or not resumable):
            shutil.rmtree(fitting.checkpoint_dir(config), ignore_errors=True)
            if made_model_dir and set(os.listdir(config.model_dir)) <= {artifacts.LOCK_FILE}:
                shutil.rmtree(config.model_dir)
        raise
    finally:
        devices.set_policy("float32")
        recipes.remove_caches(config.model_dir)

    metadata = {
        "class_names": split.class_names,
        "image_size": config.image_size,
        "color_mode": color_mode,
        "resize": "bilinear",
        "preprocessing": "EXIF-upright, "
        + ("colour reduced to grey, the grey repeated in R, G and B" if color_mode == "grayscale" else "RGB")
        + ", bilinear resize to a square; the model preprocesses 0-255 pixels itself",
        "architecture": config.arch,
        "trained_with": policy,
        "devices": distribute.describe(strategy),
        "hardware": devices.describe(),
        "threshold": threshold,
        "threshold_chosen_by": how or None,
        "class_weights": None if class_weights is None else dict(zip(split.class_names, class_weights.tolist())),
        "config": dataclasses.asdict(config),
        "data_dir": os.path.abspath(config.data_dir),  # where the review page (predict.py --serve) finds the files
        "validation": {**figures["validation"], "loss": float(min(history["val_loss"]))},
        **({"test": figures["test"]} if "test" in figures else {}),
        "training": {
            "images": len(split.train),
            "skipped_files": len(decoded.errors),
            "replicas": strategy.num_replicas_in_sync,
            "recipe": chosen.recipe,
            "peak_learning_rate": distribute.scaled_learning_rate(chosen.learning_rate, strategy.num_replicas_in_sync),
            "epochs_run": len(history["loss"]),
            "best_epoch": int(np.argmin(history["val_loss"])) + 1,
            "decode_seconds": round(decoded.seconds, 1),
            "duplicate_check_seconds": round(copies_seconds, 2),
            "fit_seconds": history["seconds"][-1],
            "train_images_per_second": round(len(split.train) * len(history["loss"]) / history["seconds"][-1], 1),
            "seconds": round(time.time() - started, 1),
        },
        "leaderboard": board,
        "test_time_flip": flip,
        "versions": library_versions(),
    }
    reported = time.time()
    diagnosis.write_training_report(chosen, run, config, split, decoded, copies, scored, metadata)
    # The pictures the recipes trained on (kept, held by the chosen result) go before the export, which needs memory.
    job.kept_images.clear()
    exported = chosen.exported
    del chosen, run
    runtimes.release_memory()
    metadata["training"]["report_seconds"] = round(time.time() - reported, 2)
    artifacts.save_model(model, artifacts.staged(config.model_dir), metadata)
    _write_inference_export(model, metadata, config, exported)
    # The earlier model's exports go too: they would label with a model that is no longer there.
    artifacts.commit(artifacts.staged(config.model_dir), config.model_dir, REPORT_FILES + list(export.FILES.values()))
    # The run is complete: its resume state and best-epoch weights are in model.h5 now.
    shutil.rmtree(fitting.checkpoint_dir(config), ignore_errors=True)
    evaluation.print_summary(metadata, config.model_dir)
    return 0


def _write_inference_export(model, metadata, config, exported=None):
    """Writes the export that predict.py labels with on this machine (model.onnx on CPUs) beside the staged model,
    listed in its metadata.json (`exported`: `model` already converted for the scoring, when it was); a converter
    that fails leaves predict.py to write it or to label in Keras."""
    runtime, _ = runtimes.choose(config.runtime)
    if runtime is runtimes.keras_model:
        return
    converted = exported if exported and exported.endswith(runtime.SUFFIX) else None
    try:
        model_file = artifacts.staged(config.model_dir, artifacts.MODEL_FILE)
        export.export(model, metadata, model_file, runtime.EXPORT_FORMAT, converted=converted)
    except UsageError as error:
        print(f"note: {error} predict.py labels in Keras, or tries it again.")


def resumed_config(config):
    """With --resume, the settings of the interrupted run in --model-dir (else `config` as it is).

    Where it runs (`PLACEMENT`) comes from this command line: the machines may differ.
    """
    if not config.resume:
        return config
    checkpoint_dir = fitting.checkpoint_dir(config)
    saved = os.path.join(checkpoint_dir, "run.json")
    if not (_has_progress(config) and os.path.isfile(saved)):
        raise UsageError(
            f"--resume: no interrupted run in {checkpoint_dir} to continue. Run without --resume to start one."
        )
    with open(saved, encoding="utf-8") as handle:
        settings = {key: value for key, value in json.load(handle).items() if key not in PLACEMENT}
    resumed = dataclasses.replace(config, **{**settings, "resume": True})
    print(f"Resuming the interrupted run in {checkpoint_dir} with its own settings.")
    return resumed


def start_checkpoints(config):
    """A fresh run (not --resume) clears an earlier run's state and records its own settings."""
    if config.resume:
        os.makedirs(artifacts.staged(config.model_dir), exist_ok=True)
        return
    checkpoint_dir = fitting.checkpoint_dir(config)
    if _has_progress(config):
        print(f"Starting over: {checkpoint_dir} held an interrupted run (--resume would have continued it).")
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    os.makedirs(artifacts.staged(config.model_dir))
    artifacts.write_text(os.path.join(checkpoint_dir, "run.json"), json.dumps(dataclasses.asdict(config), indent=2))


def _prepare(config, strategy, split, class_weights, deadline, color_mode):
    """Builds the network, decodes every file once, leaves out the unreadable ones, finds the copies and writes
    splits.csv: (the recipes.Job, the copies, seconds the copies took)."""
    model = _build(config, strategy, split.class_names)
    decoded, found = _first_pass(config, model, split, deadline)
    split = splits.drop_unreadable(split, decoded.errors, config.model_dir, config.strict)
    checked = time.time()
    split, copies = splits.check_copies(split, decoded, config)
    copies_seconds = time.time() - checked
    splits.write_splits(split, decoded.errors, config.model_dir)
    # The end (evaluation, report, export) relabels every picture about once: the recipes leave it that time.
    end_seconds = found.pop("end_seconds", decoded.seconds)
    job = recipes.Job(
        config, strategy, split, outputs.encode_labels(split.labels, len(split.class_names)),
        None if class_weights is None else class_weights[split.labels], decoded, model,
        deadline and deadline - end_seconds, color_mode == "grayscale" or splits.looks_grayscale(split), **found,
    )  # fmt: skip
    if job.grayscale and recipes.plan(config) != ["features"]:
        print("The training images are grey pictures: augmentation makes no mirrored copies of them.")
    return job, copies, copies_seconds


def _has_progress(config):
    """True when --model-dir holds an interrupted run that --resume can continue: an epoch or a recipe done."""
    folder = fitting.checkpoint_dir(config)
    return any(
        os.path.exists(os.path.join(folder, name, what))
        for name in recipes.RECIPES
        for what in ("backup", recipes.DONE_FILE)
    )


def _first_pass(config, model, split, deadline):
    """Decodes every file once: (decoding.Decoded, what the pass found out: the recipes.Job fields kept_images,
    skipped, backbones and keras_slowdown, and the seconds the end of the run will take).

    A pretrained network's frozen backbone computes its features of each image in the
    same pass; the images themselves are kept too when a recipe to come trains on them
    (unless, timed on the first batches, fine-tuning could not fit `deadline` anyway).
    """
    parts = models.backbone_and_head(model)
    size, cache_bytes = config.image_size, config.cache_mb * 2**20
    cache_file = recipes.cache_file(config.model_dir, size)
    kept_pass = os.path.join(fitting.checkpoint_dir(config), PASS_FILE)
    decoded = decoding.load_decoded(kept_pass, split.paths) if parts and config.resume else None
    if decoded:  # The images are decoded again when a recipe trains on them: a second of the backbone's minutes.
        print(f"Kept the {parts[0].name} features computed before the interruption ({len(split.paths):,} files).")
        return decoded, {}
    skipped = {}
    if parts:
        keep = recipes.keeps_images(config)
        images = decoding.image_cache(len(split.paths), size, cache_bytes, cache_file) if keep else None
        forward, runtime, line = runtimes.network_runner(
            parts[0], config.runtime, fitting.checkpoint_dir(config), len(split.paths)
        )
        # The recipes that train on the images do it in Keras: their estimates need its pace, not this runtime's.
        in_keras = runtime is runtimes.keras_model
        slowdown = runtimes.keras_slowdown(parts[0], forward, size) if keep and not in_keras else 1.0
        print(
            f"Computing {parts[0].name} features of every image at {size}x{size} px{' (keeping the images)' * keep} "
            f"on {line}..."
        )
        still_keep = recipes.still_keep(config, split, deadline, skipped, slowdown)
        decoded = decoding.extract_features(
            forward, parts[0].output.shape[-1], split.paths, size, images=images, paced=still_keep
        )
        decoding.save_decoded(kept_pass, decoded, split.paths)
        exported, export_seconds = getattr(forward, "path", None), getattr(forward, "export_seconds", 0.0)
        del forward  # its runtime's memory goes back before the recipes train
        runtimes.release_memory()
        keep = keep and not skipped
        kept = f"{decoded.inputs.shape[1]} features per image" + (f", and the images {_where(images)}" if keep else "")
    else:
        print(f"Decoding and checking every image at {size}x{size} px...")
        decoded = decoding.decode_all(split.paths, size, cache_bytes, cache_file)
        images, keep, kept = decoded.inputs, True, f"the decoded images {_where(decoded.inputs)}"
    print(
        f"Decoded and checked {len(split.paths):,} files in {decoded.seconds:.0f} s "
        f"({len(split.paths) / max(decoded.seconds, 1e-9):.0f} images/s); kept {kept}."
    )
    found = {"kept_images": {size: images} if keep else {}, "skipped": skipped}
    if parts:
        # The end relabels every picture about once (in Keras when a whole network wins) and exports the model.
        end_seconds = decoded.seconds * slowdown + export_seconds
        found.update(backbones={(config.arch, size): exported}, keras_slowdown=slowdown, end_seconds=end_seconds)
    return decoded, found


def _where(images):
    return f"{'on disk' if isinstance(images, np.memmap) else 'in RAM'} ({images.nbytes / 2**20:.0f} MB)"


def _build(config, strategy, class_names):
    """Builds the network under `strategy` (or loads --init-from) and prints its size."""
    with strategy.scope():
        if config.init_from:
            model = _earlier_model(config.init_from, class_names)
        else:
            model = models.build_model(
                config.arch, config.image_size, len(class_names), config.backbone_weights or None
            )
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    print(
        f"Network '{config.arch}': {model.count_params():,} parameters ({trainable:,} trainable); the layers of "
        f"the network kept will be listed in {os.path.join(config.model_dir, SUMMARY_FILE)}."
    )
    return model


def _earlier_model(folder, class_names):
    """The model trained earlier in `folder`: whole when its classes are these, else with a new output layer."""
    model_file = os.path.join(folder, artifacts.MODEL_FILE)
    metadata = artifacts.read_metadata(model_file)
    artifacts.check_checksum(model_file, metadata)
    model = artifacts.load_model(model_file)
    artifacts.check_matches_metadata(model, model_file, metadata)
    model = tta.unwrap(model)  # This run decides the test-time flip again.
    model = devices.with_policy(model, keras.mixed_precision.global_policy().name)
    if metadata["class_names"] == list(class_names):
        print(f"Starting from the model in {folder} (same classes): all its weights.")
        return model
    print(
        f"Starting from the model in {folder}: its classes {metadata['class_names']} differ, so its body is kept "
        f"and a new output layer is trained for {list(class_names)}."
    )
    return models.with_new_output(model, len(class_names))


def describe_class_weights(weights, split, mode):
    """The line that says which class weights training uses, and why."""
    counts = np.bincount(split.labels[split.train], minlength=len(split.class_names))
    ratio = counts.max() / max(1, counts.min())
    if weights is None:
        why = "--class-weight none" if mode == "none" else f"the classes are within {outputs.IMBALANCE_RATIO:g}x"
        return f"Class weights: none ({why}; the largest class has {ratio:.1f}x the images of the smallest)."
    listed = ", ".join(f"{name} {weight:.2f}" for name, weight in zip(split.class_names, weights))
    return (
        f"Class weights: {listed} (inverse frequency: the largest class has {ratio:.1f}x the images of the "
        "smallest; --class-weight none turns them off)."
    )
