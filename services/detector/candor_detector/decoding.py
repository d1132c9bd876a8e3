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
    if image.format == "JPEG" and width * height > limits.working_pixels:
        shrink = math.sqrt(limits.working_pixels / (width * height))
        # draft() picks the smallest DCT scale that still gives at least the requested size.
        image.draft("RGB", (max(1, int(width * shrink)), max(1, int(height * shrink))))
    try:
        image.load()
        quarter_turned = image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
        image = ImageOps.exif_transpose(image) or image
        rgb = _to_rgb8(image)
    except _CORRUPT as exc:
        raise InvalidInput("the image data is truncated or corrupt") from exc
    oriented_w, oriented_h = (height, width) if quarter_turned else (width, height)
    rgb = _shrink_to(rgb, limits.working_pixels)
    return DecodedImage(
        rgb=rgb,
        original_width=oriented_w,
        original_height=oriented_h,
        scale=oriented_w / rgb.shape[1],
    )


def _to_rgb8(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to a contiguous 8-bit RGB array."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Pillow's own convert("L") clips 16-bit values at 255; scale the range instead.
        grey = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or grey.max() > 255 else 255.0
        grey8 = np.clip(grey * (255.0 / top), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.stack([grey8] * 3, axis=-1))
    if image.mode != "RGB":
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            # Flatten transparency onto white, as a viewer would show it.
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image.convert("RGBA"))
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _shrink_to(rgb: np.ndarray, max_pixels: int) -> np.ndarray:
    """Scale an RGB array down (area interpolation) so it holds at most about max_pixels."""
    import cv2

    height, width = rgb.shape[:2]
    if height * width <= max_pixels:
        return rgb
    factor = math.sqrt(max_pixels / (height * width))
    size = (max(1, int(width * factor)), max(1, int(height * factor)))
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
