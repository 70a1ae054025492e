"""Label every image in Dataset/Predict (or --input) with the model train_cnn.py trained: `python predict.py --help`
lists the flags, the files written and the exit statuses (see README.md)."""

from imgclf import commands

if __name__ == "__main__":
    commands.predict()
