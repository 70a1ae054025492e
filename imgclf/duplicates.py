"""The same photo twice: exact copies and near-duplicates (re-encoded, resized, recompressed).

Every image gets a 32x32 colour thumbnail while it is decoded for training (`thumbnail`,
in the decoding workers); from those, a 64-bit perceptual hash (the DCT hash of
`imagehash.phash`: the 8x8 lowest frequencies of the grey thumbnail, each bit "above
the median") finds the candidate pairs, and a pair counts only when the two
thumbnails also agree pixel by pixel and colour by colour, so that two distinct
pictures of the same composition (two drawings of a cat in other colours) are not
taken for copies. "exact" pairs are byte-identical files.
"""

import dataclasses
import hashlib

import numpy as np

THUMBNAIL_SIZE = 32
HASH_SIZE = 8  # 8x8 DCT coefficients: 64 bits
# A pair is a duplicate when at most this many of the 64 hash bits differ...
MAX_HASH_DISTANCE = 8
# ...and its colour thumbnails differ by at most this much, in mean absolute level (0-255).
# Measured: copies re-encoded at JPEG quality 30 or resized to half differ by at most 3.5; the closest
# distinct shared photos by 37 or more, two cartoon cats of the demo set 8 bits apart by 29.
MAX_THUMBNAIL_DIFFERENCE = 8.0
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as Pillow's "L" mode


@dataclasses.dataclass(frozen=True)
class Pair:
    """Image `second` is a copy of image `first` (indices, first < second)."""

    first: int
    second: int
    kind: str  # "exact" (the same bytes) or "near" (the same picture, differently encoded or sized)
    similarity: float  # the share of the 64 hash bits that agree


def thumbnail(image):
    """The `(32, 32, 3)` uint8 thumbnail of a decoded `(size, size, 3)` image: the mean colour of each block."""
    pixels = np.asarray(image, np.float32)
    if pixels.shape[0] < THUMBNAIL_SIZE:  # A tiny image: each pixel repeated, so that every block has one.
        repeat = -(-THUMBNAIL_SIZE // pixels.shape[0])
        pixels = pixels.repeat(repeat, axis=0).repeat(repeat, axis=1)
    starts = np.linspace(0, pixels.shape[0], THUMBNAIL_SIZE + 1).astype(np.int64)
    sums = np.add.reduceat(np.add.reduceat(pixels, starts[:-1], axis=0), starts[:-1], axis=1)
    sizes = np.diff(starts)
    return np.rint(sums / np.outer(sizes, sizes)[..., None]).astype(np.uint8)


def perceptual_hashes(thumbnails):
    """One 64-bit perceptual hash (uint64) per `(32, 32, 3)` thumbnail, of its grey levels."""
    size = THUMBNAIL_SIZE
    k, n = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    dct = np.cos(np.pi * (2 * n + 1) * k / (2 * size))  # DCT-II, rows = frequencies (scale does not matter)
    coefficients = dct @ (np.asarray(thumbnails, np.float64) @ LUMA) @ dct.T
    low = coefficients[:, :HASH_SIZE, :HASH_SIZE].reshape(len(coefficients), -1)
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def find(thumbnails, paths, usable=None, chunk=1024):
    """Every pair of duplicate images among `thumbnails` (one per path), as `Pair`s ordered by index.

    `usable`: a boolean mask of the images to compare (unreadable files are not).
    All pairs are compared, a block of rows at a time (8000 images: 32 million pairs in under a second).
    """
    thumbnails = np.asarray(thumbnails)
    indices = np.arange(len(thumbnails)) if usable is None else np.flatnonzero(usable)
    hashes = perceptual_hashes(thumbnails[indices])
    pairs = []
    for start in range(0, len(indices), chunk):
        distances = np.bitwise_count(hashes[start : start + chunk, None] ^ hashes[None, :])
        rows, columns = np.nonzero(distances <= MAX_HASH_DISTANCE)
        keep = columns > rows + start
        for row, column in zip(rows[keep] + start, columns[keep]):
            first, second = int(indices[row]), int(indices[column])
            difference = np.abs(thumbnails[first].astype(np.float32) - thumbnails[second]).mean()
            if difference > MAX_THUMBNAIL_DIFFERENCE:
                continue
            distance = int(distances[row - start, column])
            same_bytes = distance == 0 and _same_bytes(paths[first], paths[second])
            pairs.append(Pair(first, second, "exact" if same_bytes else "near", 1 - distance / HASH_SIZE**2))
    return sorted(pairs, key=lambda pair: (pair.first, pair.second))


def _same_bytes(path, other):
    try:
        with open(path, "rb") as one, open(other, "rb") as two:
            return hashlib.file_digest(one, "sha256").digest() == hashlib.file_digest(two, "sha256").digest()
    except OSError:
        return False
