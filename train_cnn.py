"""Train an image classifier on Dataset/Training_Set/<class>/ (see README.md).

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

import config
from imgclf import cli


def main():
    settings = config.parse(config.TrainConfig, __doc__)
    cli.quiet_tensorflow()
    from imgclf import train

    return train.train(settings)


if __name__ == "__main__":
    cli.run(main)
