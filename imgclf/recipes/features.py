"""features: the pretrained backbone frozen, its features of every file computed once (the first pass), and
the head (dropout and the output layer) trained on them: seconds of training, the baseline of `auto`."""

from imgclf import data, models
from imgclf.recipes.job import Result, train_or_restore

NAME = "features"
MIN_EPOCHS = 1  # It runs first, without a deadline: there is always a model.


def network(config):
    """(architecture, image size) this recipe trains under `config`."""
    return config.arch, config.image_size


def describe(config):
    """What this recipe trains under `config`, in a line."""
    return f"{config.arch} at {config.image_size} px, frozen; its head trained on the features"


def run(job, done, deadline=None, min_epochs=0):
    """Trains the head of `job.model` on the first pass's features (its epochs are seconds: no deadline)."""
    config = job.config
    history, head = train_head(job, job.model, job.decoded.inputs, NAME)
    return Result(
        NAME, config.arch, config.image_size, job.model, head, job.decoded.inputs, history, config.learning_rate
    )


def train_head(job, model, features, name):
    """Trains the head of the pretrained `model` on `features` (its backbone's, of every file) as run `name`:
    (history, the head)."""
    config = job.config
    with job.strategy.scope():  # The head is a model of its own; it trains under the strategy too.
        _, head = models.backbone_and_head(model)
    steps = data.steps_per_epoch(len(job.split.train), config.batch_size, job.strategy.num_replicas_in_sync)
    history, _ = train_or_restore(
        job, head, features, name,
        learning_rate=config.learning_rate, epochs=config.epochs or models.default_epochs(config.arch, steps),
    )  # fmt: skip
    return history, head
