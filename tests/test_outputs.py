import csv
import io

import numpy as np
import pytest

from imgclf import labeling, outputs


def test_binary_labels_follow_the_threshold():
    scores = np.array([[0.1], [0.55], [0.9]])
    chosen, confidence = outputs.label_rows(scores, 0.5)
    assert chosen.tolist() == [0, 1, 1]
    np.testing.assert_allclose(confidence, [0.9, 0.55, 0.9])
    chosen, _ = outputs.label_rows(scores, 0.6)
    assert chosen.tolist() == [0, 0, 1]


def test_two_unit_softmax_labels_like_one_sigmoid():
    # Keras 2 tutorials sometimes ended two classes in Dense(2, softmax): column 1 is the second class.
    chosen, confidence = outputs.label_rows(np.array([[0.8, 0.2], [0.3, 0.7]]), 0.5)
    assert chosen.tolist() == [0, 1]
    np.testing.assert_allclose(confidence, [0.8, 0.7])
    assert outputs.fits(2, 2) and outputs.fits(1, 2) and not outputs.fits(3, 2) and not outputs.fits(1, 1)


def test_multiclass_labels_are_the_most_likely_class():
    chosen, confidence = outputs.label_rows(np.array([[0.2, 0.7, 0.1], [0.5, 0.2, 0.3]]))
    assert chosen.tolist() == [1, 0] and confidence.tolist() == [0.7, 0.5]


def test_sigmoid_output_becomes_two_class_probabilities():
    np.testing.assert_allclose(outputs.class_probabilities(np.array([[0.25]])), [[0.75, 0.25]])


@pytest.mark.parametrize(
    "num_classes, units, loss, dtype",
    [(2, 1, "binary_crossentropy", np.float32), (3, 3, "sparse_categorical_crossentropy", np.int32)],
)
def test_one_rule_for_units_loss_and_label_encoding(num_classes, units, loss, dtype):
    assert outputs.units(num_classes) == units and outputs.loss(num_classes) == loss
    encoded = outputs.encode_labels([0, 1, 1], num_classes)
    assert encoded.dtype == dtype and encoded.shape == ((3, 1) if num_classes == 2 else (3,))


def test_csv_columns_and_formula_cells_are_neutralised():
    rows = [['=HYPERLINK("x")', "cats", "0.9", "0.9", "0.1", ""], ["b,c.jpg", "", "", "", "", "-broken"]]
    text = labeling.predictions_csv(rows, ["cats", "dogs"])
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == ["path", "label", "confidence", "prob_cats", "prob_dogs", "error"]
    assert parsed[1][0] == '\'=HYPERLINK("x")'
    assert parsed[2][0] == "b,c.jpg" and parsed[2][5] == "'-broken"
