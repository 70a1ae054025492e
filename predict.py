"""Label every image in Dataset/Predict (or --input) with the model trained by train_cnn.py.

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

exit status:
  0    every file labeled
  1    some files could not be read (each has its reason in the error column); the rest are labeled
  2    usage error: a bad flag value, a missing path, an invalid or changed model file
  130  interrupted (Ctrl-C): the rows labeled so far are in the CSV; --resume labels the rest
"""

import config
from imgclf import cli


def main():
    settings = config.parse(config.PredictConfig, __doc__)
    from imgclf import labeling

    return labeling.predict(settings)


if __name__ == "__main__":
    cli.run(main)
