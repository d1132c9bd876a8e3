"""Image decoding: limits, conversions and the downscale of large photos."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from candor_faces.decoding import DecodeLimits, decode_image
from candor_kit import InvalidInput, TooLarge

LIMITS = DecodeLimits(max_bytes=15 << 20, max_pixels=50_000_000, working_pixels=1_500_000)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def giant_png(width: int = 20000, height: int = 20000) -> bytes:
    """A real, fully valid 20000x20000 grey PNG (400 MP), compressed to well under 1 MB."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes(width)
    body = b"".join(compressor.compress(row * 500) for _ in range(height // 500)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_empty_bytes_are_refused() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        decode_image(b"", LIMITS)


def test_text_file_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not a readable JPEG or PNG"):
        decode_image(b"case notes, not a photo\n" * 20, LIMITS)


def test_truncated_jpeg_is_refused(samples: Path) -> None:
    data = (samples / "obama.jpg").read_bytes()
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        decode_image(data[: len(data) // 3], LIMITS)


@pytest.mark.parametrize("name", ["obama.jpg", "32bit.png"])
def test_a_photo_cut_anywhere_in_its_first_kilobytes_is_invalid_input(samples: Path, name: str) -> None:
    data = (samples / name).read_bytes()
    for length in range(1, 4096, 7):
        with pytest.raises(InvalidInput):
            decode_image(data[:length], LIMITS)


def test_decompression_bomb_png_is_refused_from_its_header() -> None:
    bomb = giant_png()
    assert len(bomb) < 2 << 20
    with pytest.raises(TooLarge, match="MP"):
        decode_image(bomb, LIMITS)


def test_image_over_the_pixel_limit_names_its_size() -> None:
    with pytest.raises(TooLarge, match="10000x6000"):
        decode_image(giant_png(10000, 6000), LIMITS)


def test_oversized_bytes_are_refused() -> None:
    with pytest.raises(TooLarge, match="bytes"):
        decode_image(b"\xff" * (LIMITS.max_bytes + 1), LIMITS)


def test_gif_is_refused_as_unsupported() -> None:
    with pytest.raises(InvalidInput, match="unsupported image format GIF"):
        decode_image(encode(Image.new("RGB", (20, 20)), "GIF"), LIMITS)


def test_rgba_png_is_flattened_onto_white() -> None:
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    decoded = decode_image(encode(image), LIMITS)
    assert decoded.rgb.shape == (4, 4, 3)
    assert decoded.rgb.dtype == np.uint8
    assert (decoded.rgb == 255).all()


def test_sixteen_bit_grey_png_is_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    decoded = decode_image(encode(Image.fromarray(ramp)), LIMITS)
    grey = decoded.rgb[..., 0]
    assert grey.min() == 0 and grey.max() == 255
    # Clipping would have turned every value over 255 into 255.
    assert len(np.unique(grey)) > 32


def test_grey_jpeg_becomes_three_channels(samples: Path) -> None:
    grey = Image.open(samples / "obama.jpg").convert("L")
    decoded = decode_image(encode(grey, "JPEG"), LIMITS)
    assert decoded.rgb.shape[2] == 3


def test_twelve_megapixel_jpeg_is_decoded_near_working_size(samples: Path) -> None:
    photo = Image.open(samples / "obama.jpg").resize((4000, 3000))
    decoded = decode_image(encode(photo, "JPEG"), LIMITS)
    height, width = decoded.rgb.shape[:2]
    assert width * height <= LIMITS.working_pixels
    assert (decoded.original_width, decoded.original_height) == (4000, 3000)
    assert decoded.scale == pytest.approx(4000 / width)
