"""Test-time flip: the saved model labels each picture and its mirror image and averages the two answers.

Built into the model itself, of Keras layers (so model.h5 and every export carry it). `--tta auto` keeps it only
when it labels the validation images clearly better (by more than one standard error, as `auto` compares its
candidates: `recipes/choice.py`; balanced accuracy when classes are weighted) with no higher loss: it doubles
the model's work per picture. Never for grey pictures (X-rays, scans), whose left and
right are not interchangeable.
"""

import dataclasses

import keras
import numpy as np
from keras import layers

from imgclf import decoding, devices, evaluation, models, runtimes
from imgclf.recipes import choice

AVERAGE = "flip_average"  # the layer that marks a model with the flip built in


def _mirror(images, name=None):
    """`images` (a Keras tensor: batch, height, width, channels) mirrored left to right, in Keras's own layers
    (so model.h5 loads anywhere, in safe mode, and every runtime runs it): the columns reordered by a fixed
    permutation matrix, which multiplies each pixel by 1 and adds zeros, exactly."""
    width = images.shape[2]
    columns_last = layers.Permute((1, 3, 2))(images)
    reorder = layers.Dense(width, use_bias=False, trainable=False, name=name)
    mirrored = reorder(columns_last)
    reorder.set_weights([np.eye(width, dtype=np.float32)[::-1]])
    return layers.Permute((1, 3, 2))(mirrored)


def with_flip(model):
    """`model` answering the average of its probabilities for each image and for its mirror image."""
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    averaged = layers.Average(name=AVERAGE, dtype="float32")([model(inputs), model(_mirror(inputs, "mirror"))])
    return keras.Model(inputs, averaged, name=model.name)


def unwrap(model):
    """The network inside a model with the flip built in (what Grad-CAM and --init-from work on), else `model`."""
    if AVERAGE not in {layer.name for layer in model.layers}:
        return model
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def _mirrored(run):
    """`run` (a runtimes runner of images) on the mirror images of its batches."""
    return lambda images: run(np.asarray(images)[:, :, ::-1])


def _mirrored_features(job, chosen, indices, into):
    """Writes the frozen backbone's features of the files at `indices`, mirrored, into those rows of `into`."""
    print(f"Test-time flip: the features of {len(indices):,} mirrored images...", flush=True)
    backbone = models.backbone(chosen.model)
    exported = job.backbones.get((chosen.arch, chosen.image_size))  # what the first pass ran, when it was exported
    run = runtimes.exported_runner(exported) if exported else runtimes.keras_model.runner(backbone)
    paths, dimensions = [job.split.paths[i] for i in indices], backbone.output.shape[-1]
    into[indices] = decoding.extract_features(_mirrored(run), dimensions, paths, chosen.image_size).inputs


def choose(job, chosen, run):
    """(`chosen` with the flip built in or as it is, what was decided for metadata.json, the runner of what is saved),
    per --tta.

    `chosen` (a recipes.Result) is the float32 model to save, `run` the runtimes runner of its trainee
    on its inputs; the runner returned scores the validation and test images as the saved model labels them.
    """
    mode, split = job.config.tta, job.split
    if mode == "none" or (mode == "auto" and job.grayscale):
        why = "--tta none" if mode == "none" else "grey pictures: left and right are not interchangeable"
        return chosen, {"used": False, "why": why}, run
    whole = chosen.trainee is chosen.model
    if whole:  # The network labels the images: the mirrored ones go through it too.
        mirrored_run, mirrored_inputs = _mirrored(run), chosen.inputs
    else:  # The head labels frozen features: it scores the backbone's features of the mirrored images.
        mirrored_run, mirrored_inputs = run, np.array(chosen.inputs)  # training rows: not mirrored
        _mirrored_features(job, chosen, split.validation, mirrored_inputs)
    truth, plain = evaluation.probabilities_of(run, split, split.validation, chosen.inputs)
    _, mirrored = evaluation.probabilities_of(mirrored_run, split, split.validation, mirrored_inputs)
    averaged, weighted = (plain + mirrored) / 2, job.sample_weights is not None
    before, after = evaluation.validation_scores(truth, plain), evaluation.validation_scores(truth, averaged)
    gained = round((after["accuracy"] - before["accuracy"]) * len(truth))  # validation images now labeled right
    right = choice.labeled_right(truth, averaged), choice.labeled_right(truth, plain)
    difference, standard_error = choice.difference(*right, choice.image_weights(truth, weighted))
    clearly = difference > standard_error
    used = mode == "flip" or (clearly and after["loss"] <= before["loss"])
    gain = f"it labels {gained} more validation image(s) right" if gained > 0 else "no more validation images right"
    if mode == "flip":
        why = "--tta flip"
    elif used:
        why = f"{gain}, more than one standard error"
    elif not clearly:
        why = f"{gain}, within one standard error: not worth twice the work" if gained > 0 else gain
    else:
        why = f"{gain}, but with a higher loss"
    print(
        f"Test-time flip ({'kept' if used else 'not kept'}: {why}): validation accuracy {before['accuracy']:.2%} -> "
        f"{after['accuracy']:.2%} (balanced {before['balanced_accuracy']:.2%} -> {after['balanced_accuracy']:.2%}), "
        f"loss {before['loss']:.3f} -> {after['loss']:.3f}"
        + (" (each picture and its mirror image are labeled: twice the model's work)." if used else "."),
        flush=True,
    )
    decision = {
        "used": used, "why": why, "validation": {"plain": before, "flipped": after},
        # in the measure `auto` chooses by (balanced accuracy when classes are weighted)
        "gain": round(difference, 4), "standard_error": round(standard_error, 4),
    }  # fmt: skip
    if not used:
        return chosen, decision, run
    model = with_flip(chosen.model)
    if whole:  # What the flip layers compute, on the runtime that scored the network.

        def both(images):
            return (run(images) + mirrored_run(images)) / 2

        return dataclasses.replace(chosen, model=model, trainee=model, exported=None), decision, both
    if len(split.test):  # scored once, as the saved model will label it
        _mirrored_features(job, chosen, split.test, mirrored_inputs)
    # The head on each file's two feature vectors (its own and its mirror image's), the answers averaged.
    features = keras.Input(shape=(2, *np.shape(chosen.inputs)[1:]), name="features_and_mirrored")
    answers = layers.TimeDistributed(chosen.trainee)(features)
    paired = keras.Model(features, layers.GlobalAveragePooling1D(dtype="float32")(answers))
    inputs = np.stack([chosen.inputs, mirrored_inputs], axis=1)
    paired_run = runtimes.keras_model.runner(devices.inference_model(paired))
    return dataclasses.replace(chosen, model=model, trainee=paired, inputs=inputs, exported=None), decision, paired_run
