"""Which tf.distribute strategy training runs under (`--strategy`), and what changes with it.

- one: TensorFlow's default strategy, one device (the first GPU, else the CPU).
- mirrored: `tf.distribute.MirroredStrategy` over every local GPU (without GPUs:
  every logical CPU device, which is how the tests run it).
- multi-worker: `tf.distribute.MultiWorkerMirroredStrategy` across machines, the
  cluster read from `--workers`/`--worker-index` or else from TF_CONFIG.

With several replicas, `--batch-size` images go to each replica per step, so the
global batch is `batch_size * replicas`, and the peak learning rate is multiplied
by `sqrt(replicas)` (the square-root rule for Adam: the gradient noise of a batch
k times larger shrinks by sqrt(k)).
"""

import functools
import json
import math
import os

import keras
import tensorflow as tf

from imgclf.cli import UsageError, WorkerLost


def cluster_resolver(workers, worker_index):
    """The multi-worker cluster from `--workers host:port,...` and `--worker-index`, else TF_CONFIG; None if neither."""
    if workers:
        addresses = [address.strip() for address in workers.split(",") if address.strip()]
        if any(address.rpartition(":")[0] == "" or not address.rpartition(":")[2].isdigit() for address in addresses):
            raise UsageError(f"`--workers` must be host:port pairs separated by commas. Received: {workers}")
        if worker_index >= len(addresses):
            raise UsageError(
                f"`--worker-index` {worker_index} is not a position in `--workers` ({len(addresses)} workers, "
                f"0 to {len(addresses) - 1})."
            )
        spec = tf.train.ClusterSpec({"worker": addresses})
        return tf.distribute.cluster_resolver.SimpleClusterResolver(
            spec, task_type="worker", task_id=worker_index, rpc_layer="grpc"
        )
    if not os.environ.get("TF_CONFIG"):
        return None
    try:
        json.loads(os.environ["TF_CONFIG"])
    except ValueError as error:
        raise UsageError(f"TF_CONFIG is not valid JSON ({error}). Fix it, unset it, or use --workers.") from None
    return tf.distribute.cluster_resolver.TFConfigClusterResolver()


def make_strategy(setting, workers="", worker_index=0):
    """The strategy for `--strategy`; create it before anything else touches TensorFlow's devices."""
    resolver = cluster_resolver(workers, worker_index)
    cluster_size = len(resolver.cluster_spec().as_dict().get("worker", [])) if resolver else 0
    if setting == "auto":
        if cluster_size > 1:
            setting = "multi-worker"
        else:
            setting = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "one"
    if setting == "multi-worker":
        if resolver is None:
            raise UsageError(
                "--strategy multi-worker: no cluster given. Pass --workers host:port,host:port and --worker-index, "
                "or set TF_CONFIG (see README, Several GPUs and machines)."
            )
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    if setting == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    return tf.distribute.get_strategy()


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_distributed(strategy):
    """True under mirrored or multi-worker (their models hold per-device copies of each variable)."""
    return isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))


def is_chief(strategy):
    """True on the one process that writes the model files (every process but multi-worker's non-chief workers)."""
    return strategy.extended.should_checkpoint


def worker_index(strategy):
    return strategy.cluster_resolver.task_id if is_multi_worker(strategy) else 0


def describe(strategy):
    """How training is spread, for the start-up report."""
    replicas = strategy.num_replicas_in_sync
    if is_multi_worker(strategy):
        resolver = strategy.cluster_resolver
        count = len(resolver.cluster_spec().as_dict().get("worker", []))
        role = "the chief, writes the model" if is_chief(strategy) else "writes no model files"
        return f"multi-worker, worker {resolver.task_id} of {count} ({role}), {replicas} replicas in all"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        names = [name.rpartition("device:")[2] for name in strategy.extended.worker_devices]
        return f"mirrored over {replicas} devices ({', '.join(names)})"
    return "one device"


def scaled_learning_rate(learning_rate, replicas):
    """The square-root rule: `replicas` times the batch, `sqrt(replicas)` times the learning rate."""
    return learning_rate * math.sqrt(replicas)


def fix_multi_worker_fit(model, strategy):
    """Lets `model.fit` run under MultiWorkerMirroredStrategy on Keras 3.15 (keras-team/keras#20585).

    Keras's TensorFlow trainer, in multi-worker mode, (1) builds the model's state
    from `strategy.reduce("MEAN", batch)` of the first batch, which TensorFlow
    refuses for per-replica values, and (2) averages each step's scalar logs with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on a scalar. Here, on this
    model only, (1) builds from the first replica's batch instead (only its shapes
    are used) and (2) returns the logs as vectors of one value, which that
    reduction averages across replicas as intended. The gradients' all-reduce is
    Keras's and TensorFlow's own and is not touched.
    """
    if not is_multi_worker(strategy):
        return

    def symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, replica_batches in iterator:
                batch = next(replica_batches)
                data_batch = keras.tree.map_structure(lambda v: strategy.experimental_local_results(v)[0], batch)
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    def logs_as_vectors(step):
        @functools.wraps(step)
        def wrapped(data):
            return {name: tf.reshape(value, [1]) for name, value in step(data).items()}

        return wrapped

    model._maybe_symbolic_build = symbolic_build
    model.train_step = logs_as_vectors(model.train_step)
    model.test_step = logs_as_vectors(model.test_step)


# What TensorFlow raises on the other workers when one of them is gone.
PEER_LOST = (
    tf.errors.UnavailableError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
    tf.errors.DeadlineExceededError,
)


def worker_lost(error, checkpoint_dir):
    """The error to stop with when a multi-worker peer went away mid-training."""
    return WorkerLost(
        f"training stopped: another worker went away ({type(error).__name__}). The last complete epoch "
        f"is saved in {checkpoint_dir}; start every worker again with its same command plus --resume."
    )


class AgreeOnResume(keras.callbacks.Callback):
    """On --resume under multi-worker, checks that every worker restored the same epoch, else all stop.

    Trainable weights and optimizer state are identical across workers at the
    end of any epoch, so equal epochs mean equal starting states. A worker killed
    between the others' end-of-epoch backup and its own is one epoch behind; then
    every worker stops with the same message instead of training apart. Goes
    after BackupAndRestore in the callback list (it sets the epoch to start at).
    """

    def __init__(self, strategy):
        super().__init__()
        self.strategy = strategy

    def on_train_begin(self, logs=None):
        if not (is_multi_worker(self.strategy) and self.strategy.num_replicas_in_sync > 1):
            return
        epoch = int(getattr(self.model, "_initial_epoch", None) or 0)  # Set by BackupAndRestore.

        @tf.function
        def all_epochs():
            context = lambda: tf.distribute.get_replica_context()  # noqa: E731
            return self.strategy.run(lambda: context().all_gather(tf.constant([epoch], tf.int64), axis=0))

        epochs = self.strategy.experimental_local_results(all_epochs())[0].numpy().tolist()
        if len(set(epochs)) > 1:
            raise UsageError(
                f"--resume: the workers saved different epochs ({', '.join(map(str, epochs))} complete), so they "
                "cannot continue together. Run every worker again without --resume to start over."
            )
