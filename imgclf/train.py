"""Training, from class folders to a saved model and its reports."""

import csv
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
import warnings

import keras
import numpy as np
import PIL
import tensorflow as tf

from imgclf import artifacts, data, devices, diagnosis, distribute, evaluation, export, folders, models, outputs, splits
from imgclf.cli import UsageError

CHECKPOINTS = "checkpoints"
SUMMARY_FILE = "summary.txt"
LOGS = "logs"
# Every report a training run writes beside its model: committed together with the model, and an earlier
# model's copy removed when this run wrote none, so a folder never mixes two runs.
REPORT_FILES = [
    splits.SKIPPED_FILE, SUMMARY_FILE, splits.SPLITS_FILE, LOGS, "history.csv", "report.txt", "training_curves.png",
    "confusion_matrix.png", "roc_curve.png", "pr_curve.png", *diagnosis.REPORT_FILES,
]  # fmt: skip
PLACEMENT = ("strategy", "workers", "worker_index")


def compile_model(model, num_classes, learning_rate, total_steps, warmup_steps, jit="auto"):
    """Adam with a linear warm-up then cosine decay; binary or sparse categorical cross-entropy.

    `jit` (auto|on|off) is `--jit`: auto is Keras's own choice, XLA on GPUs and off on CPUs.
    """
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate / 10,
        decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=learning_rate,
        warmup_steps=warmup_steps,
    )
    loss = outputs.loss(num_classes)
    jit_compile = {"auto": "auto", "on": True, "off": False}[jit]
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=["accuracy"], jit_compile=jit_compile)


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
        return dataclasses.replace(config, arch=arch, image_size=earlier["image_size"])
    config = dataclasses.replace(config, arch=config.arch or config.DEFAULT_ARCH)
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
    """Decodes, fits, evaluates and reports, then commits the model and its reports to --model-dir."""
    start_checkpoints(config)  # Only once the data is known to be there: never lose a resumable run to a typo.
    num_classes = len(split.class_names)
    policy, why = devices.precision_choice(config.mixed_precision)
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
    cache_file = os.path.join(config.model_dir, ".decoded-images.npy")
    try:
        devices.set_policy(policy)
        model = _build(config, strategy, split.class_names)
        with strategy.scope():  # The head is a model of its own; it trains under the strategy too.
            parts = models.backbone_and_head(model)
        if parts:  # Pretrained: the frozen backbone sees each image once; the head trains on its features.
            backbone, trainee = parts
            print(f"Computing {backbone.name} features of every image at {config.image_size}x{config.image_size} px...")
            decoded = data.extract_features(backbone, split.paths, config.image_size)
            what = f"{decoded.inputs.shape[1]} features per image"
        else:
            trainee = model
            print(f"Decoding and checking every image at {config.image_size}x{config.image_size} px...")
            decoded = data.decode_all(split.paths, config.image_size, config.cache_mb * 2**20, cache_file)
            what = "decoded images " + ("on disk" if isinstance(decoded.inputs, np.memmap) else "in RAM")
        inputs, errors = decoded.inputs, decoded.errors
        print(
            f"Decoded and checked {len(split.paths):,} files in {decoded.seconds:.0f} s "
            f"({len(split.paths) / max(decoded.seconds, 1e-9):.0f} images/s); cached {inputs.nbytes / 2**20:.0f} MB "
            f"of {what}."
        )
        split = splits.drop_unreadable(split, errors, config.model_dir, config.strict)
        checked = time.time()
        split, copies = splits.check_copies(split, decoded, config)
        copies_seconds = time.time() - checked
        splits.write_splits(split, errors, config.model_dir)
        labels = outputs.encode_labels(split.labels, num_classes)
        sample_weights = None if class_weights is None else class_weights[split.labels]
        history = _fit(config, strategy, trainee, split, inputs, labels, parts is None, sample_weights)
        devices.set_policy("float32")
        if not distribute.is_chief(strategy):
            print(f"Worker finished training; the chief writes the model. Resume state kept in {config.model_dir}.")
            return 0
        # What is saved runs on any machine: float32, and outside any distribution strategy.
        model = devices.with_policy(model, "float32", copy=distribute.is_distributed(strategy))
        # Evaluate as predict.py will label, so the report matches what users get (the head on the
        # backbone's features computes exactly what the whole network does).
        trainee = models.backbone_and_head(model)[1] if parts else model
        scored = evaluation.evaluate(devices.inference_model(trainee), config, split, inputs, labels, history)
        threshold, how, figures = scored["threshold"], scored["how"], scored["figures"]
    except Exception as error:
        resumable = os.path.isdir(os.path.join(config.model_dir, CHECKPOINTS, "backup"))
        # A fresh run that stopped on bad data, or failed before its first epoch, has nothing to resume.
        if not config.resume and (isinstance(error, UsageError) or not resumable):
            shutil.rmtree(os.path.join(config.model_dir, CHECKPOINTS), ignore_errors=True)
            if made_model_dir and set(os.listdir(config.model_dir)) <= {artifacts.LOCK_FILE}:
                shutil.rmtree(config.model_dir)
        raise
    finally:
        devices.set_policy("float32")
        if os.path.exists(cache_file):
            os.remove(cache_file)

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
        "validation": {**figures["validation"], "loss": float(min(history["val_loss"]))},
        **({"test": figures["test"]} if "test" in figures else {}),
        "training": {
            "images": len(split.train),
            "skipped_files": len(errors),
            "replicas": strategy.num_replicas_in_sync,
            "peak_learning_rate": distribute.scaled_learning_rate(config.learning_rate, strategy.num_replicas_in_sync),
            "epochs_run": len(history["loss"]),
            "best_epoch": int(np.argmin(history["val_loss"])) + 1,
            "decode_seconds": round(decoded.seconds, 1),
            "duplicate_check_seconds": round(copies_seconds, 2),
            "fit_seconds": history["seconds"][-1],
            "train_images_per_second": round(len(split.train) * len(history["loss"]) / history["seconds"][-1], 1),
            "seconds": round(time.time() - started, 1),
        },
        "versions": library_versions(),
    }
    reported = time.time()
    diagnosis.write_training_report(model, trainee, config, split, decoded, copies, scored, metadata)
    metadata["training"]["report_seconds"] = round(time.time() - reported, 2)
    artifacts.save_model(model, artifacts.staged(config.model_dir), metadata)
    # The earlier model's exports go too: they would label with a model that is no longer there.
    artifacts.commit(artifacts.staged(config.model_dir), config.model_dir, REPORT_FILES + list(export.FILES.values()))
    # The run is complete: its resume state and best-epoch weights are in model.h5 now.
    shutil.rmtree(os.path.join(config.model_dir, CHECKPOINTS), ignore_errors=True)
    evaluation.print_summary(metadata, config.model_dir)
    return 0


class ElapsedTime(keras.callbacks.Callback):
    """Adds `seconds` of training so far to each epoch's logs (and so to history.csv)."""

    def __init__(self, earlier_seconds=0.0):
        super().__init__()
        self.earlier_seconds = earlier_seconds

    def on_train_begin(self, logs=None):
        self.started = time.time() - self.earlier_seconds

    def on_epoch_end(self, epoch, logs=None):
        logs["seconds"] = round(time.time() - self.started, 2)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping that, on --resume, starts from the best epoch reached before the interruption.

    Without this a resumed run would forget the earlier best weights and could end
    by saving a worse model than the interrupted run already had.
    """

    def __init__(self, earlier, best_weights_path, **kwargs):
        super().__init__(monitor="val_loss", restore_best_weights=True, **kwargs)
        self.earlier, self.best_weights_path = earlier, best_weights_path

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if not self.earlier:
            return
        current = self.model.get_weights()
        with warnings.catch_warnings():  # Only the weights are wanted here, not the optimizer state beside them.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            self.model.load_weights(self.best_weights_path)
        self.best_weights = self.model.get_weights()
        self.model.set_weights(current)  # BackupAndRestore, after this, restores the latest state.
        losses = self.earlier["val_loss"]
        self.best_epoch = int(np.argmin(losses))
        self.best = losses[self.best_epoch]
        self.wait = len(losses) - 1 - self.best_epoch


def read_history(path):
    """history.csv as {column: [value per epoch]}."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def resumed_config(config):
    """With --resume, the settings of the interrupted run in --model-dir (else `config` as it is).

    Where it runs (`PLACEMENT`) comes from this command line: the machines may differ.
    """
    if not config.resume:
        return config
    checkpoint_dir = os.path.join(config.model_dir, CHECKPOINTS)
    saved = os.path.join(checkpoint_dir, "run.json")
    if not (os.path.isdir(os.path.join(checkpoint_dir, "backup")) and os.path.isfile(saved)):
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
    checkpoint_dir = os.path.join(config.model_dir, CHECKPOINTS)
    if os.path.isdir(os.path.join(checkpoint_dir, "backup")):
        print(f"Starting over: {checkpoint_dir} held an interrupted run (--resume would have continued it).")
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    os.makedirs(artifacts.staged(config.model_dir))
    artifacts.write_text(os.path.join(checkpoint_dir, "run.json"), json.dumps(dataclasses.asdict(config), indent=2))


def _build(config, strategy, class_names):
    """Builds the network under `strategy` (or loads --init-from), prints its size and writes summary.txt."""
    with strategy.scope():
        if config.init_from:
            model = _earlier_model(config.init_from, class_names)
        else:
            model = models.build_model(
                config.arch, config.image_size, len(class_names), config.backbone_weights or None
            )
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    if distribute.is_chief(strategy):
        artifacts.write_text(artifacts.staged(config.model_dir, SUMMARY_FILE), models.summary_text(model))
    print(
        f"Network '{config.arch}': {model.count_params():,} parameters ({trainable:,} trainable), "
        f"layers listed in {os.path.join(config.model_dir, SUMMARY_FILE)}."
    )
    return model


def _earlier_model(folder, class_names):
    """The model trained earlier in `folder`: whole when its classes are these, else with a new output layer."""
    model_file = os.path.join(folder, artifacts.MODEL_FILE)
    metadata = artifacts.read_metadata(model_file)
    artifacts.check_checksum(model_file, metadata)
    model = artifacts.load_model(model_file)
    artifacts.check_matches_metadata(model, model_file, metadata)
    model = devices.with_policy(model, keras.mixed_precision.global_policy().name)
    if metadata["class_names"] == list(class_names):
        print(f"Starting from the model in {folder} (same classes): all its weights.")
        return model
    print(
        f"Starting from the model in {folder}: its classes {metadata['class_names']} differ, so its body is kept "
        f"and a new output layer is trained for {list(class_names)}."
    )
    return models.with_new_output(model, len(class_names))


def _fit(config, strategy, model, split, images, labels, augment=True, sample_weights=None):
    """Compiles and fits `model` on `images` (or feature vectors: `augment` False); returns the history.

    `sample_weights` (one per image: its class's weight) weight the training and the
    validation loss alike, so the best epoch is the best on the weighted loss.
    `model` ends with the best epoch's weights.
    """
    num_classes = len(split.class_names)
    replicas = strategy.num_replicas_in_sync
    train_batches = data.replica_batches(
        strategy, images, labels, split.train, config.batch_size, seed=config.seed, augment=augment,
        weights=sample_weights,
    )  # fmt: skip
    validation_batches = data.replica_batches(
        strategy, images, labels, split.validation, config.batch_size, what="validation", weights=sample_weights
    )
    steps_per_epoch = data.steps_per_epoch(len(split.train), config.batch_size, replicas)
    learning_rate = distribute.scaled_learning_rate(config.learning_rate, replicas)
    epochs = config.epochs or models.default_epochs(config.arch, steps_per_epoch)
    with strategy.scope():
        compile_model(model, num_classes, learning_rate, steps_per_epoch * epochs, steps_per_epoch, config.jit)
    distribute.fix_multi_worker_fit(model, strategy)
    print(
        f"{replicas} replica(s) x {config.batch_size} images per step, up to {epochs} epoch(s), "
        f"peak learning rate {learning_rate:.3g}, "
        f"XLA {'on' if model.jit_compile else 'off'}."
    )

    checkpoint_dir = os.path.join(config.model_dir, CHECKPOINTS)
    partial_history = os.path.join(checkpoint_dir, "history.csv")
    earlier = read_history(partial_history) if config.resume else {}
    best_weights = os.path.join(checkpoint_dir, "best.weights.h5")
    callbacks = [
        ElapsedTime(earlier.get("seconds", [0.0])[-1]),  # First, so the callbacks after it log the time too.
        keras.callbacks.ModelCheckpoint(
            best_weights, monitor="val_loss", save_best_only=True, save_weights_only=True,
            initial_value_threshold=min(earlier["val_loss"]) if earlier else None,
        ),
        ResumableEarlyStopping(earlier, best_weights, patience=config.patience),
        # Saves weights, optimizer state and epoch after every epoch; removed when training completes.
        keras.callbacks.BackupAndRestore(os.path.join(checkpoint_dir, "backup"), double_checkpoint=True),
        distribute.AgreeOnResume(strategy),
        keras.callbacks.CSVLogger(partial_history, append=config.resume),
    ]  # fmt: skip
    if distribute.is_chief(strategy):
        callbacks.append(keras.callbacks.TensorBoard(log_dir=artifacts.staged(config.model_dir, LOGS)))
    if replicas > 1:  # Keras cannot know a distributed dataset's length before its first epoch ends, and says so.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
    try:
        model.fit(
            train_batches,
            validation_data=validation_batches,
            epochs=epochs,
            callbacks=callbacks,
            shuffle=False,
            verbose=1 if sys.stdout.isatty() else 2,
        )
    except distribute.PEER_LOST as error:
        if not distribute.is_multi_worker(strategy):
            raise
        raise distribute.worker_lost(error, checkpoint_dir) from None
    except KeyboardInterrupt:
        if distribute.is_multi_worker(strategy):
            how = "start every worker again with its same command plus --resume"
        else:
            how = f"python train_cnn.py --resume --model-dir {config.model_dir}"
        print(
            f"\nTraining interrupted; the last complete epoch is saved in {checkpoint_dir}. Continue with: {how}",
            file=sys.stderr,
        )
        raise
    history = read_history(partial_history)
    with open(partial_history, encoding="utf-8") as handle:
        artifacts.write_text(artifacts.staged(config.model_dir, "history.csv"), handle.read())
    return history


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
