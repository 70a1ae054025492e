"""Train an image classifier on Dataset/Training_Set/<class>/ (see README.md).

Writes models/model.h5, model.weights.h5, metadata.json and the reports.
Exit status: 0 trained, 2 usage error (bad flag, path or folder layout), 130 interrupted.
"""

import config
from imgclf import cli


def main():
    settings = config.parse(config.TrainConfig, __doc__.splitlines()[0])
    cli.quiet_tensorflow()
    from imgclf import train

    return train.train(settings)


if __name__ == "__main__":
    cli.run(main)
