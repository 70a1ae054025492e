import csv
import io

import numpy as np

from imgclf import predict


def test_binary_labels_follow_the_threshold():
    outputs = np.array([[0.1], [0.55], [0.9]])
    chosen, confidence = predict.label_rows(outputs, 2, 0.5)
    assert chosen.tolist() == [0, 1, 1]
    np.testing.assert_allclose(confidence, [0.9, 0.55, 0.9])
    chosen, _ = predict.label_rows(outputs, 2, 0.6)
    assert chosen.tolist() == [0, 0, 1]


def test_multiclass_labels_are_the_most_likely_class():
    chosen, confidence = predict.label_rows(np.array([[0.2, 0.7, 0.1], [0.5, 0.2, 0.3]]), 3, 0.5)
    assert chosen.tolist() == [1, 0] and confidence.tolist() == [0.7, 0.5]


def test_sigmoid_output_becomes_two_class_probabilities():
    np.testing.assert_allclose(predict.class_probabilities(np.array([[0.25]]), 2), [[0.75, 0.25]])


def test_csv_columns_and_formula_cells_are_neutralised():
    rows = [['=HYPERLINK("x")', "cats", "0.9", "0.9", "0.1", ""], ["b,c.jpg", "", "", "", "", "-broken"]]
    text = predict.predictions_csv(rows, ["cats", "dogs"])
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == ["path", "label", "confidence", "prob_cats", "prob_dogs", "error"]
    assert parsed[1][0] == '\'=HYPERLINK("x")'
    assert parsed[2][0] == "b,c.jpg" and parsed[2][5] == "'-broken"
