"""Label every image in Dataset/Predict (or --input) with the model trained by train_cnn.py.

Prints one line per file and writes predictions.csv.
Exit status: 0 every file labeled, 1 some files could not be read (the rest are
still labeled), 2 usage error (bad flag, path or model file), 130 interrupted.
"""

import config
from imgclf import cli


def main():
    settings = config.parse(config.PredictConfig, __doc__.splitlines()[0])
    cli.quiet_tensorflow()
    from imgclf import predict

    return predict.predict(settings)


if __name__ == "__main__":
    cli.run(main)
