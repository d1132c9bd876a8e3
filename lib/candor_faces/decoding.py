"""Decoding JPEG and PNG probes and gallery photos with limits.

Limits are checked on the header, before any pixel is decoded, so a decompression bomb costs
nothing. Large JPEGs are decoded straight at a reduced scale (libjpeg's DCT scaling), so a
12-megapixel photo costs about what a 1-megapixel one does.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from candor_kit.errors import InvalidInput, TooLarge

SUPPORTED_FORMATS = ("JPEG", "PNG")
#: What Pillow raises on data cut short or mangled: header parsing, pixel decoding, EXIF.
_CORRUPT = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError)
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class DecodeLimits:
    """How large an input may be."""

    max_bytes: int = 15 * 1024 * 1024
    max_pixels: int = 50_000_000
    #: The memory the decoded pixels may take at their own depth (a 16-bit or 32-bit image takes
    #: two or four times an 8-bit one of the same size): what decoding costs, not only its pixels.
    max_decoded_bytes: int = 200 * 1024 * 1024
    #: The pixel count to work at; larger photos are scaled down to about this.
    working_pixels: int = 1_500_000


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image at working size, and the factor that maps its pixels back to the original."""

    rgb: np.ndarray
    original_width: int
    original_height: int
    #: original pixels per working pixel (1.0 when not scaled).
    scale: float


def decode_image(data: bytes, limits: DecodeLimits) -> DecodedImage:
    """Decode JPEG or PNG bytes into 8-bit RGB at working size.

    Grey, palette, RGBA and 16-bit inputs are converted; EXIF orientation is applied.
    Raises InvalidInput for empty, unreadable, truncated or unsupported data, and TooLarge when
    a limit is exceeded.
    """
    if not data:
        raise InvalidInput("the image is empty")
    if len(data) > limits.max_bytes:
        raise TooLarge(f"the image is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fires on the header, before ours, for the most extreme sizes.
        raise TooLarge(f"the image has over {limits.max_pixels / 1e6:.0f} MP, the limit") from exc
    except UnidentifiedImageError as exc:
        raise InvalidInput("the data is not a readable JPEG or PNG image") from exc
    except _CORRUPT as exc:
        _refuse_metadata_bomb(exc)
        # A file cut short or mangled inside its header fails here, before any pixel is read.
        raise InvalidInput("the image header is truncated or corrupt") from exc
    if image.format not in SUPPORTED_FORMATS:
        raise InvalidInput(f"unsupported image format {image.format}; send JPEG or PNG")
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidInput("the image has no pixels")
    if width * height > limits.max_pixels:
        raise TooLarge(
            f"the image is {width}x{height} ({width * height / 1e6:.0f} MP); "
            f"the limit is {limits.max_pixels / 1e6:.0f} MP"
        )
    decoded = int(width * height * _bytes_per_pixel(image.mode))
    if decoded > limits.max_decoded_bytes:
        raise TooLarge(
            f"the image is {width}x{height} in {image.mode} mode: {decoded / 2**20:.0f} MiB decoded; "
            f"the limit is {limits.max_decoded_bytes / 2**20:.0f} MiB (send it as an 8-bit JPEG or PNG)"
        )
    if image.format == "JPEG" and width * height > limits.working_pixels:
        shrink = math.sqrt(limits.working_pixels / (width * height))
        # draft() picks the smallest DCT scale that still gives at least the requested size.
        image.draft("RGB", (max(1, int(width * shrink)), max(1, int(height * shrink))))
    try:
        image.load()
        quarter_turned = image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
        image = ImageOps.exif_transpose(image) or image
        rgb = _to_rgb8(image, limits.working_pixels)
    except _CORRUPT as exc:
        _refuse_metadata_bomb(exc)
        raise InvalidInput("the image data is truncated or corrupt") from exc
    finally:
        image.close()  # the full-size pixels go now, not when the collector gets round to them
    oriented_w, oriented_h = (height, width) if quarter_turned else (width, height)
    rgb = _shrink_to(rgb, limits.working_pixels)
    return DecodedImage(
        rgb=rgb,
        original_width=oriented_w,
        original_height=oriented_h,
        scale=oriented_w / rgb.shape[1],
    )


def _refuse_metadata_bomb(exc: BaseException) -> None:
    """TooLarge when Pillow stopped inflating a metadata chunk (a compressed text or colour profile
    of a PNG) at its limit: a decompression bomb in the metadata, not a damaged file."""
    if isinstance(exc, ValueError) and "Decompressed data too large" in str(exc):
        raise TooLarge(
            "the image's metadata (a compressed text or colour-profile chunk) inflates beyond the 1 MB "
            "allowed; strip the metadata and send the photo again"
        ) from exc


#: Bytes per decoded pixel of Pillow's modes (anything else counts as four).
_MODE_BYTES = {"1": 0.125, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}


def _bytes_per_pixel(mode: str) -> float:
    if mode.startswith("I;16"):
        return 2
    return _MODE_BYTES.get(mode, 4)


def _to_rgb8(image: Image.Image, working_pixels: int) -> np.ndarray:
    """Convert any Pillow mode to a contiguous 8-bit RGB array (grey images of more than 8 bits are
    brought down to the working size before their three channels are made)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Pillow's own convert("L") clips 16-bit values at 255; scale the range instead, at the
        # image's own depth (no float64 copy of a large image).
        grey = np.asarray(image)
        if grey.dtype.byteorder == ">" or grey.dtype == np.int32:
            grey = grey.astype(np.float32)
        grey = _shrink_to(grey, working_pixels)
        top = 65535.0 if image.mode.startswith("I;16") or float(grey.max(initial=0)) > 255 else 255.0
        grey8 = np.clip(grey.astype(np.float32, copy=False) * (255.0 / top), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.stack([grey8] * 3, axis=-1))
    if image.mode != "RGB":
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            # Flatten transparency onto white, as a viewer would show it.
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image.convert("RGBA"))
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _shrink_to(rgb: np.ndarray, max_pixels: int) -> np.ndarray:
    """Scale an image array down (area interpolation) so it holds at most about max_pixels."""
    import cv2

    height, width = rgb.shape[:2]
    if height * width <= max_pixels:
        return rgb
    factor = math.sqrt(max_pixels / (height * width))
    size = (max(1, int(width * factor)), max(1, int(height * factor)))
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
