"""How `auto` chooses among its candidates on the validation images, and says what it chose.

Accuracy first (balanced accuracy when classes are weighted). A few hundred validation
images cannot tell apart two candidates a picture or two apart, so the leader wins
outright only over those it labels better by more than one standard error of the
difference (paired: the images only one of the two labels right decide it); among the
leader and the candidates it does not clearly beat, the lowest loss wins: cross-entropy
counts how sure each answer was, so it still separates candidates that accuracy cannot.
"""

import numpy as np

from imgclf import outputs


def labeled_right(truth, probabilities):
    """Which images `probabilities` labels right: its most probable class, as `evaluation.validation_scores` counts."""
    return outputs.label_rows(probabilities)[0] == truth


def measure(weighted):
    """What `auto` maximizes first: accuracy, or balanced accuracy when classes are weighted."""
    return "balanced_accuracy" if weighted else "accuracy"


def image_weights(truth, weighted):
    """Each validation image's share of the measure: 1/n, or for balanced accuracy 1/(classes x its class's count)."""
    counts = np.bincount(truth)
    if not weighted:
        return np.full(len(truth), 1 / len(truth))
    return 1 / (np.count_nonzero(counts) * counts[truth])


def difference(first_right, second_right, weights):
    """(how much the first of two answers to the validation images scores above the second, the standard error of
    that difference), from which images each labels right, each image counting `weights`."""
    differs = weights * (np.asarray(first_right, float) - second_right)
    return float(differs.sum()), float(np.sqrt(np.sum(differs**2)))


def clearly_better(first_right, second_right, weights):
    """True when the first answer scores above the second by more than one standard error of the difference."""
    gain, standard_error = difference(first_right, second_right, weights)
    return gain > standard_error


def best(results, truth, weighted):
    """The candidate to keep: the lowest loss among the leader and those it does not clearly beat (None if none)."""
    results = list(results)
    if not results:
        return None
    field = measure(weighted)
    leader = max(results, key=lambda result: (result.validation[field], -result.validation["loss"]))
    weights = image_weights(truth, weighted)
    close = [result for result in results if not clearly_better(leader.right, result.right, weights)]
    return min(close, key=lambda result: result.validation["loss"])


def describe_scores(scores):
    """A candidate's validation figures, in words."""
    return f"accuracy {scores['accuracy']:.2%} (balanced {scores['balanced_accuracy']:.2%}), loss {scores['loss']:.3f}"


def verdict(chosen, results, truth, weighted):
    """The line that says which candidate won and by how much."""
    runner_up = best((result for result in results if result is not chosen), truth, weighted)
    field = measure(weighted)
    name = field.replace("_", " ")
    ours, theirs = chosen.validation[field], runner_up.validation[field]
    losses = f"loss {chosen.validation['loss']:.3f} against {runner_up.validation['loss']:.3f}"
    heading = f"Chosen: {chosen.recipe} ({chosen.arch}, {chosen.image_size} px), validation {name} {ours:.2%}"
    if ours >= theirs:
        return f"{heading}: {(ours - theirs) * 100:+.1f} points over {runner_up.recipe} ({theirs:.2%}), {losses}."
    return (
        f"{heading}, {runner_up.recipe} {theirs:.2%}: no clear difference on {len(truth):,} validation images "
        f"(within one standard error), and the lower loss: {losses}."
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
