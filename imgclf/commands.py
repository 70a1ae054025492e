"""The two commands, `train_cnn.py` (`imgclf-train` once installed) and `predict.py` (`imgclf-predict`): their help
and exit statuses, flags parsed into config.py's settings, then the library (`training.train`, `labeling.predict`)."""

from imgclf import cli

TRAIN_HELP = """Train an image classifier on Dataset/Training_Set/<class>/ (see README.md).

files written into --model-dir (models/):
  model.h5            the trained network, what predict.py loads
  model.weights.h5    its weights alone
  metadata.json       class names, image size, threshold, settings, scores, SHA-256 of both model files
  summary.txt         the network's layers and parameter counts
  report.html         the page to read: scores, curves, top losses with Grad-CAM, label errors, duplicates
  history.csv, training_curves.png, report.txt, confusion_matrix.png, roc_curve.png, pr_curve.png,
  splits.csv, skipped_files.txt, top_losses.csv, suspect_labels.csv, duplicates.csv

exit status:
  0    trained
  2    usage error: a bad flag value, a missing or empty folder, a folder that cannot be written;
       with --strict also an unreadable file or a test image that is a copy of a training image
  3    --strategy multi-worker: another worker went away (start every worker again with --resume)
  130  interrupted (Ctrl-C): the model folder is as it was; stopped during the epochs, the last complete
       one is kept and --resume continues from it
"""

PREDICT_HELP = """Label every image in Dataset/Predict (or --input) with the model trained by train_cnn.py.

files written:
  predictions.csv     (--output) path, label, confidence, prob_<class> per class, error;
                      written batch by batch, so an interrupted run keeps its rows (--resume finishes it)
  predictions_report.html, _report.txt, _top_losses.csv, _confusion_matrix.png, _roc_curve.png, _pr_curve.png
                      with --evaluate
  <--explain>/<file>.png    with --explain: a Grad-CAM overlay of each labeled image
  <--sort-into>/<label>/<file>    with --sort-into: copies, the originals are never moved
  models/model.onnx, model.tflite, model_int8.tflite, saved_model/    with --export (listed in metadata.json)
  models/model.onnx   once, when the model folder lacks it (trained before training wrote it) or it changed:
                      what labels on CPUs (--runtime auto); model.tflite the same for --runtime litert
  <data folder>/_set_aside/, review_log.jsonl    with --serve: the review page's moves (never the model folder)

exit status:
  0    every file labeled; --serve: stopped with Ctrl-C
  1    some files could not be read (each has its reason in the error column); the rest are labeled
  2    usage error: a bad flag value, a missing path, an invalid or changed model file
  130  interrupted (Ctrl-C): the rows labeled so far are in the CSV; --resume labels the rest
"""


def train_cnn(argv=None):
    """`python train_cnn.py`: exits with the status TRAIN_HELP lists."""

    def main():
        settings = cli.settings().parse(cli.settings().TrainConfig, TRAIN_HELP, argv)
        cli.quiet_tensorflow()
        from imgclf import training

        return training.train(settings)

    cli.run(main)


def predict(argv=None):
    """`python predict.py`: exits with the status PREDICT_HELP lists."""

    def main():
        settings = cli.settings().parse(cli.settings().PredictConfig, PREDICT_HELP, argv)
        if settings.serve:
            from imgclf import serve

            return serve.serve(settings)
        from imgclf import labeling

        return labeling.predict(settings)

    cli.run(main)
