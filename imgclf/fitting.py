"""Fitting one network on cached inputs: its optimizer and schedule, and the callbacks that keep the best
epoch, make the run resumable after Ctrl-C, and size it to the time budget."""

import csv
import json
import math
import os
import sys
import time
import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from imgclf import artifacts, data, distribute, outputs

CHECKPOINTS = "checkpoints"
LOGS = "logs"
PROBE_STEPS = 5  # training steps timed after the first (which compiles) to estimate an epoch's time


@keras.saving.register_keras_serializable(package="imgclf")  # clone_model rebuilds a compiled model's optimizer
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """A linear warm-up from a tenth of `peak` to `peak` over `warmup_steps`, then a cosine decay to zero at
    `total_steps`, which `FitToBudget` may shorten once it has timed the first steps (a variable, read at
    every step)."""

    def __init__(self, peak, warmup_steps, total_steps):
        self.peak, self.warmup_steps = float(peak), float(max(1, warmup_steps))
        self.total_steps = tf.Variable(float(total_steps), trainable=False, name="schedule_total_steps")

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak / 10 + (self.peak - self.peak / 10) * step / self.warmup_steps
        decay_steps = ops.maximum(1.0, self.total_steps - self.warmup_steps)
        progress = ops.minimum(ops.maximum(step - self.warmup_steps, 0.0), decay_steps) / decay_steps
        return ops.where(step < self.warmup_steps, warm, self.peak * 0.5 * (1 + ops.cos(math.pi * progress)))

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": float(self.total_steps.numpy())}


def compile_model(model, num_classes, schedule, jit="auto"):
    """Adam on `schedule`; binary or sparse categorical cross-entropy.

    `jit` (auto|on|off) is `--jit`: auto is Keras's own choice, XLA on GPUs and off on CPUs.
    """
    jit_compile = {"auto": "auto", "on": True, "off": False}[jit]
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=outputs.loss(num_classes),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


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


class OutOfBudget(Exception):
    """Raised by FitToBudget to stop a run at once (no validation pass, no checkpoint) when it does not fit."""


class FitToBudget(keras.callbacks.Callback):
    """Sizes a run to the time left before `deadline`.

    After the first PROBE_STEPS steps that follow the one that compiles (with one step
    an epoch: after the second epoch) it estimates an epoch's time, plans the epochs
    that fit (at most the run's own, at least one; the schedule then decays over them)
    and writes the plan into `plan_file`, which a resumed run reads back. When fewer
    than `min_epochs` fit, it says why in `skipped` and raises OutOfBudget.
    """

    def __init__(self, deadline, schedule, steps_per_epoch, epochs, min_epochs, plan_file, validation_share):
        super().__init__()
        self.deadline, self.schedule, self.steps, self.epochs = deadline, schedule, steps_per_epoch, epochs
        self.min_epochs, self.plan_file, self.validation_share = min_epochs, plan_file, validation_share
        self.planned = self.skipped = None

    def on_train_begin(self, logs=None):
        if os.path.isfile(self.plan_file):
            with open(self.plan_file, encoding="utf-8") as handle:
                self._plan(json.load(handle)["epochs"])

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.epoch_started = epoch, time.time()

    def on_train_batch_end(self, batch, logs=None):
        if self.planned is not None or self.steps < 2:
            return
        if batch == 0:
            self.timed_from = time.time()
        elif batch == min(PROBE_STEPS, self.steps - 1):
            # Each validation image costs about a third of a training one (no backward pass).
            self._decide((time.time() - self.timed_from) / batch * self.steps * (1 + self.validation_share / 3))

    def on_epoch_end(self, epoch, logs=None):
        took = time.time() - self.epoch_started
        if self.planned is None and self.steps < 2 and epoch >= 1:  # the first epoch compiled: time the second
            self._decide(took)
        if self.planned is not None and epoch + 1 >= self.planned:
            self.model.stop_training = True
        elif self.planned is not None and time.time() + took > self.deadline:  # Slower than its first steps said.
            print(f"Stopping after {epoch + 1} epoch(s): another would end past the time for this run.", flush=True)
            self.model.stop_training = True

    def _decide(self, epoch_seconds):
        self.epoch_seconds = epoch_seconds
        left = self.deadline - self.epoch_started
        fit = self.epoch + int(left // epoch_seconds)
        if fit < self.min_epochs:
            self.skipped = (
                f"{self.min_epochs} epoch(s) need about {self.min_epochs * epoch_seconds / 60:.1f} min; "
                f"{max(0.0, left) / 60:.1f} min were left for it"
            )
            raise OutOfBudget(self.skipped)
        self._plan(min(self.epochs, max(fit, self.epoch + 1)))
        artifacts.write_text(self.plan_file, json.dumps({"epochs": self.planned}))
        print(
            f"About {epoch_seconds:.0f} s an epoch: {self.planned} epoch(s) "
            f"({'all' if self.planned == self.epochs else 'what fits in'} {max(0.0, left) / 60:.1f} min left).",
            flush=True,
        )

    def _plan(self, epochs):
        self.planned = epochs
        self.schedule.total_steps.assign(float(epochs * self.steps))


def read_history(path):
    """history.csv as {column: [value per epoch]}."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def checkpoint_dir(config, name=""):
    """Where run `name` (a recipe) of --model-dir keeps its resume state until training completes."""
    return os.path.join(config.model_dir, CHECKPOINTS, name)


def stage_history(config, name):
    """Puts run `name`'s history.csv (every epoch, a resumed run's too) among the reports to commit."""
    with open(os.path.join(checkpoint_dir(config, name), "history.csv"), encoding="utf-8") as handle:
        artifacts.write_text(os.path.join(artifacts.staged(config.model_dir), "history.csv"), handle.read())


def fit(job, model, inputs, name, *, learning_rate, epochs, augment=False, deadline=None, min_epochs=1,
        batch_size=None):  # fmt: skip
    """Compiles and fits `model` on `inputs[i]` (images, or feature vectors) for every file, `batch_size` (else
    --batch-size's) per step on each device; returns (history, why it was skipped or None).

    `augment` (False, True or RandomAffine settings) applies to images only. The
    class weights weight the training and the validation loss alike, so the best epoch
    is the best on the weighted loss, and `model` ends with its weights. Its resume
    state lives in `checkpoint_dir(config, name)`. With a `deadline`, `FitToBudget`
    sizes the run; a run of which fewer than `min_epochs` fit stops after its first steps.
    """
    config, strategy, split = job.config, job.strategy, job.split
    replicas, batch_size = strategy.num_replicas_in_sync, batch_size or config.batch_size
    train_batches = data.replica_batches(
        strategy, inputs, job.labels, split.train, batch_size, seed=config.seed, augment=augment,
        weights=job.sample_weights,
    )  # fmt: skip
    validation_batches = data.replica_batches(
        strategy, inputs, job.labels, split.validation, batch_size, what="validation",
        weights=job.sample_weights,
    )  # fmt: skip
    steps = data.steps_per_epoch(len(split.train), batch_size, replicas)
    learning_rate = distribute.scaled_learning_rate(learning_rate, replicas)
    schedule = WarmupCosine(learning_rate, steps, steps * epochs)
    with strategy.scope():
        compile_model(model, len(split.class_names), schedule, config.jit)
    distribute.fix_multi_worker_fit(model, strategy)
    print(
        f"{replicas} replica(s) x {batch_size} images per step, up to {epochs} epoch(s), "
        f"peak learning rate {learning_rate:.3g}, XLA {'on' if model.jit_compile else 'off'}.",
        flush=True,
    )

    folder = checkpoint_dir(config, name)
    os.makedirs(folder, exist_ok=True)
    partial_history = os.path.join(folder, "history.csv")
    earlier = read_history(partial_history) if os.path.isfile(partial_history) else {}
    best_weights = os.path.join(folder, "best.weights.h5")
    budget = FitToBudget(
        deadline, schedule, steps, epochs, min_epochs, os.path.join(folder, "plan.json"),
        len(split.validation) / max(1, len(split.train)),
    ) if deadline is not None else None  # fmt: skip
    callbacks = [
        ElapsedTime(earlier.get("seconds", [0.0])[-1]),  # First, so the callbacks after it log the time too.
        *([budget] if budget else []),
        keras.callbacks.ModelCheckpoint(
            best_weights, monitor="val_loss", save_best_only=True, save_weights_only=True,
            initial_value_threshold=min(earlier["val_loss"]) if earlier else None,
        ),
        ResumableEarlyStopping(earlier, best_weights, patience=config.patience),
        # Saves weights, optimizer state and epoch after every epoch; removed when training completes.
        keras.callbacks.BackupAndRestore(os.path.join(folder, "backup"), double_checkpoint=True),
        distribute.AgreeOnResume(strategy),
        keras.callbacks.CSVLogger(partial_history, append=bool(earlier)),
    ]  # fmt: skip
    if distribute.is_chief(strategy):
        callbacks.append(
            keras.callbacks.TensorBoard(log_dir=os.path.join(artifacts.staged(config.model_dir, LOGS), name))
        )
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
    except OutOfBudget as skipped:
        return {}, str(skipped)
    except distribute.PEER_LOST as error:
        if not distribute.is_multi_worker(strategy):
            raise
        raise distribute.worker_lost(error, checkpoint_dir(config)) from None
    except KeyboardInterrupt:
        if distribute.is_multi_worker(strategy):
            how = "start every worker again with its same command plus --resume"
        else:
            how = f"python train_cnn.py --resume --model-dir {config.model_dir}"
        print(
            f"\nTraining interrupted; the last complete epoch is saved in {checkpoint_dir(config)}. "
            f"Continue with: {how}",
            file=sys.stderr,
        )
        raise
    return read_history(partial_history), None
