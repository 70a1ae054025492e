"""Reading one image file into a fixed-size RGB array.

Training and prediction both call `load_image`, so a photo is decoded, turned
upright and resized the same way in both.
"""

import contextlib
import warnings

import numpy as np
from PIL import Image, ImageOps

# Images whose header declares more pixels than this are refused before any
# pixel is decoded: a small file can declare a huge image (a decompression bomb).
MAX_PIXELS = 150_000_000


class ImageError(Exception):
    """A file that cannot be used as an image; the message says why, `kind` in a word: "missing", "not an image",
    "too large" (a decompression bomb) or "damaged"."""

    def __init__(self, message, kind="damaged"):
        super().__init__(message)
        self.kind = kind


RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


# Pillow modes with one channel (a grey value, maybe with transparency): X-rays, scans.
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def is_grayscale(path):
    """True when the file stores one channel (read from its header only); False for colour or unreadable files."""
    try:
        with Image.open(path) as image:
            return image.mode in GRAY_MODES
    except Exception:  # Unreadable files are reported where they are decoded.
        return False


GRAYSCALE_TOLERANCE = 3  # mean difference between colour channels (of 255) that a grey picture stored in colour has


def looks_grayscale(path, size=32):
    """True when `path` shows a grey picture, stored with one channel or in colour with every channel alike (X-rays
    saved as RGB JPEGs); False for colour or unreadable files."""
    try:
        pixels = load_image(path, size).astype(np.int16)
    except ImageError:
        return False
    return max(np.abs(pixels[..., 0] - pixels[..., 1]).mean(), np.abs(pixels[..., 1] - pixels[..., 2]).mean()) < (
        GRAYSCALE_TOLERANCE
    )


def load_image(path, size, resize="bilinear", grayscale=False):
    """Decodes `path` into a `(size, size, 3)` uint8 RGB array.

    Phone photos are turned upright from their EXIF orientation, grayscale,
    palette, CMYK, 16-bit and transparent images become plain RGB (transparent
    areas on white; a grey image has its one channel repeated), and the image is
    resized to a square (`resize`: "bilinear", or "nearest" as the Keras 2 tutorials
    did). Large JPEGs are decoded directly at a reduced scale (DCT scaling).
    `grayscale`: colour images are first reduced to their luminance, as for a model
    trained on grayscale images only.

    Raises:
        ImageError: the file is missing, not an image, damaged or too large.
    """
    with _reasons(), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            return prepare(image, size, resize, grayscale)


def prepare(image, size, resize="bilinear", grayscale=False):
    """An opened PIL image (a file, an upload, a picture made in memory) as `load_image` makes it: a
    `(size, size, 3)` uint8 RGB array.

    Raises:
        ImageError: the image declares too many pixels, or its data is damaged.
    """
    with _reasons(), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        _check_pixels(image)
        image.draft("RGB", (size, size))
        image = ImageOps.exif_transpose(image)
        image = _to_rgb(image)
        if grayscale:
            image = image.convert("L").convert("RGB")
        image = image.resize((size, size), RESAMPLING[resize])
        return np.asarray(image, dtype=np.uint8)


def thumbnail(path, size):
    """`path` upright in RGB, at most `size` px on its longer side (its proportions kept), for showing it: a PIL
    image. Raises ImageError as `load_image` does."""
    with _reasons(), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            _check_pixels(image)
            image.draft("RGB", (size, size))
            image = _to_rgb(ImageOps.exif_transpose(image))
            image.thumbnail((size, size))
            return image


def _check_pixels(image):
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"refused as a decompression bomb: declares {width}x{height} pixels, over {MAX_PIXELS}", "too large"
        )


@contextlib.contextmanager
def _reasons():
    """Pillow's and the file system's errors as an ImageError saying why, in a line."""
    try:
        yield
    except FileNotFoundError:
        raise ImageError("file not found (a dangling link?)", "missing") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not an image file Pillow can read", "not an image") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"refused as a decompression bomb: {error}", "too large") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        raise ImageError(f"damaged or unreadable image: {error}") from None


def _to_rgb(image):
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # Pillow clips 16/32-bit grayscale to 255 when converting; scale it instead.
        pixels = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        image = Image.fromarray(np.clip(pixels * (255.0 / peak), 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")
