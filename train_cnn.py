"""Train an image classifier on Dataset/Training_Set/<class>/: `python train_cnn.py --help` lists the flags, the
files written and the exit statuses (see README.md)."""

from imgclf import commands

if __name__ == "__main__":
    commands.train_cnn()
