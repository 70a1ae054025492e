import numpy as np

from imgclf import report


def test_confusion_matrix_and_metrics():
    counts = report.confusion_matrix([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], 3)
    assert counts.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    precision, recall, f1, support = report.per_class_metrics(counts)
    np.testing.assert_allclose(precision, [1.0, 0.5, 0.5])
    np.testing.assert_allclose(recall, [2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(f1, [0.8, 0.5, 2 / 3])
    assert support.tolist() == [3, 2, 1]


def test_two_class_report_has_sensitivity_and_specificity():
    counts = np.array([[8, 2], [1, 9]])
    text = report.text_report(counts, ["cats", "dogs"])
    assert "accuracy: 0.8500 (17/20)" in text
    assert "sensitivity (recall of 'dogs'): 0.9000" in text
    assert "specificity (recall of 'cats'): 0.8000" in text


def test_class_with_no_predictions_reports_zero_not_nan():
    text = report.text_report(np.array([[5, 0], [5, 0]]), ["a", "b"])
    assert "nan" not in text.lower()


def test_a_class_without_images_stays_out_of_the_averages():
    # A 3-class model evaluated on a folder holding cats and dogs only; one dog was called a bird.
    counts = np.array([[4, 0, 0], [0, 8, 2], [0, 0, 0]])
    text = report.text_report(counts, ["cats", "dogs", "birds"], {"balanced_accuracy": 0.9})
    macro = next(line for line in text.splitlines() if line.startswith("macro avg")).split()
    assert macro[2:5] == ["1.0000", "0.9000", "0.9444"]  # precision, recall, F1 of cats and dogs only
    birds = next(line for line in text.splitlines() if line.startswith("birds")).split()
    assert birds == ["birds", "-", "-", "-", "0"]
    assert "(no images of 'birds' here: left out of the averages)" in text


def test_plots_are_png_files(tmp_path):
    report.plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["a", "b"], tmp_path / "cm.png")
    report.plot_history(
        {"loss": [1, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.5, 0.8], "val_accuracy": [0.4, 0.7]},
        tmp_path / "curves.png",
    )
    for name in ("cm.png", "curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_long_and_cjk_class_names_are_whole_and_plot_without_glyph_warnings(tmp_path):
    import warnings

    names = ["猫", "a-rather-long-class-name"]
    text = report.text_report(np.array([[3, 1], [0, 4]]), names)
    header = text.splitlines()[
        text.splitlines().index("confusion matrix (rows: true class, columns: predicted class)") + 1
    ]
    assert header.split() == names  # Not cut to 9 characters.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Matplotlib's "Glyph ... missing from font" is a UserWarning.
        report.plot_confusion_matrix(np.array([[3, 1], [0, 4]]), names, tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 1000
    assert report._drawable_names(["Dogs", "é"]) == ["Dogs", "é"]
