import io
import struct
import zlib

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
from PIL import Image

from imgclf import images


def _save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_jpeg_is_resized_to_a_square_rgb_array(tmp_path):
    path = _save(Image.new("RGB", (120, 80), (200, 30, 30)), tmp_path / "a.jpg", quality=95)
    pixels = images.load_image(path, 32)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert abs(int(pixels[..., 0].mean()) - 200) < 4 and pixels[..., 1].mean() < 40


@pytest.mark.parametrize("mode, value", [("L", 128), ("1", 255), ("CMYK", (0, 0, 0, 0)), ("P", 5)])
def test_other_modes_become_rgb(tmp_path, mode, value):
    suffix = ".jpg" if mode == "CMYK" else ".png"
    path = _save(Image.new(mode, (20, 20), value), tmp_path / f"img{suffix}")
    assert images.load_image(path, 16).shape == (16, 16, 3)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    path = _save(Image.fromarray(np.full((10, 10), 32768, np.uint16)), tmp_path / "deep.png")
    pixels = images.load_image(path, 8)
    assert 120 <= pixels.mean() <= 135  # 32768/65535 of white, not clipped to 255


def test_transparent_areas_become_white(tmp_path):
    path = _save(Image.new("RGBA", (10, 10), (255, 0, 0, 0)), tmp_path / "clear.png")
    assert images.load_image(path, 8).min() == 255


def test_exif_rotated_photo_is_turned_upright(tmp_path):
    # Stored 40 wide x 20 high, left half black, with EXIF "rotate 90 clockwise to view" (orientation 6).
    pixels = np.full((20, 40, 3), 255, np.uint8)
    pixels[:, :20] = 0
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(Image.fromarray(pixels), tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = images.load_image(path, 20)
    # Once upright the black half is on top.
    assert upright[:8].mean() < 30 and upright[12:].mean() > 225


def test_large_jpeg_is_decoded_at_reduced_scale(tmp_path):
    path = _save(Image.new("RGB", (2000, 1600), (10, 200, 10)), tmp_path / "big.jpg")
    with Image.open(path) as image:
        image.draft("RGB", (64, 64))
        assert image.size == (250, 200)  # The DCT scaling load_image relies on.
    assert images.load_image(path, 64).shape == (64, 64, 3)


def _png_declaring(width, height):
    """A tiny PNG whose header claims `width` x `height` pixels (a decompression bomb's shape)."""

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "not an image"),
        (b"hello, I am text", "not an image"),
        (_png_declaring(30000, 30000), "decompression bomb"),
    ],
)
def test_unusable_files_raise_image_error_with_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(images.ImageError, match=reason):
        images.load_image(path, 16)


def test_truncated_jpeg_raises_image_error(tmp_path):
    path = _save(Image.effect_noise((200, 200), 50).convert("RGB"), tmp_path / "whole.jpg")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(path.read_bytes()[:300])
    with pytest.raises(images.ImageError, match="damaged"):
        images.load_image(cut, 16)


def test_missing_file_raises_image_error(tmp_path):
    with pytest.raises(images.ImageError, match="not found"):
        images.load_image(tmp_path / "gone.jpg", 16)


@hypothesis.settings(
    max_examples=150, deadline=None, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture]
)
@hypothesis.given(content=st.binary(max_size=2000), cut=st.floats(0, 1))
def test_any_bytes_give_an_image_or_a_reason(tmp_path, content, cut):
    """Random bytes, and random truncations of a real JPEG and PNG: 'ok' or ImageError, nothing else."""
    real = io.BytesIO()
    Image.effect_noise((40, 30), 40).convert("RGB").save(real, "JPEG" if len(content) % 2 else "PNG")
    for data in (content, real.getvalue()[: int(len(real.getvalue()) * cut)]):
        path = tmp_path / "fuzz.jpg"
        path.write_bytes(data)
        try:
            assert images.load_image(path, 16).shape == (16, 16, 3)
        except images.ImageError as error:
            assert str(error)
