"""Train an image classifier from a folder of pictures, then label pictures with it.

    import imgclf
    classifier = imgclf.train("Dataset")      # or imgclf.load("models")
    classifier.predict("photo.jpg")["label"]

See `imgclf.api` (the Python API) and README.md; `train_cnn.py` and `predict.py` are the commands.
"""

from imgclf.cli import UsageError
from imgclf.images import ImageError

__all__ = ["Classifier", "ImageError", "UsageError", "load", "train"]


def __getattr__(name):
    """`train`, `load` and `Classifier` come from `imgclf.api` when first used: the scripts, which import parts of
    this package, do not pay for it."""
    if name in ("Classifier", "load", "train"):
        from imgclf import api

        return getattr(api, name)
    raise AttributeError(f"module 'imgclf' has no attribute {name!r}")
