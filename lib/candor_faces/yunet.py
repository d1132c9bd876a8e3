"""YuNet (OpenCV Zoo, MIT): a 233 KB CNN face detector run through OpenCV's ``FaceDetectorYN``.

YuNet sees each photo scaled to at most ``DETECT_PIXELS``: its anchors cover faces from about
10 px up to a few hundred, so a face that fills a large photo is found only at a reduced scale,
and the cost stays flat however large the photo. Its boxes are mapped back to the photo and
turned into the square that dlib's 5-point shape predictor was trained on (dlib HOG's box), so
the chips it leads to are the ones dlib's ResNet expects.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import dlib
import numpy as np

from candor_faces.faces import Found

#: Photos are scaled to at most this many pixels for detection (about 1150 x 870).
DETECT_PIXELS = 1_000_000
#: Photos whose longer side is shorter than this are scaled up to it: YuNet misses faces that
#: fill a small frame (a 92 x 112 passport-style crop), which it finds at twice the size.
MIN_LONG_SIDE = 320
#: A face YuNet scores below this is not reported (the OpenCV Zoo demo uses 0.9).
MIN_SCORE = 0.7
NMS_THRESHOLD = 0.3
TOP_K = 5000
#: dlib HOG's square box relative to YuNet's box, measured on 82 photos where both found the
#: face: side 1.104 x YuNet's width and 0.801 x its height; centre 0.062 x its height lower.
HOG_SIDE_PER_WIDTH = 1.104
HOG_SIDE_PER_HEIGHT = 0.801
HOG_CENTRE_DROP = 0.062


def hog_like_rect(x: float, y: float, width: float, height: float) -> dlib.rectangle:
    """The square dlib's HOG detector would put around the face YuNet boxed at (x, y, w, h)."""
    side = (HOG_SIDE_PER_WIDTH * width + HOG_SIDE_PER_HEIGHT * height) / 2
    centre_x, centre_y = x + width / 2, y + height / 2 + HOG_CENTRE_DROP * height
    half = side / 2
    return dlib.rectangle(
        round(centre_x - half), round(centre_y - half), round(centre_x + half), round(centre_y + half)
    )


class YuNetFinder:
    """Finds faces with YuNet. Not thread-safe: callers run it on one thread at a time."""

    name = "yunet-2023mar"

    def __init__(
        self,
        model: Path,
        min_score: float = MIN_SCORE,
        detect_pixels: int = DETECT_PIXELS,
        min_long_side: int = MIN_LONG_SIDE,
    ) -> None:
        # OpenCV warns on stderr, at every start, that its new DNN engine ignores target hints.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        self._net = cv2.FaceDetectorYN.create(str(model), "", (320, 320), min_score, NMS_THRESHOLD, TOP_K)
        self._detect_pixels = detect_pixels
        self._min_long_side = min_long_side

    def _factor(self, width: int, height: int) -> float:
        """How much the photo is scaled for detection."""
        if width * height > self._detect_pixels:
            return math.sqrt(self._detect_pixels / (width * height))
        if max(width, height) < self._min_long_side:
            return self._min_long_side / max(width, height)
        return 1.0

    def find(self, rgb: np.ndarray) -> list[Found]:
        """Every face YuNet scores at least ``min_score``, in the photo's pixels."""
        height, width = rgb.shape[:2]
        factor = self._factor(width, height)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if factor != 1.0:
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
            bgr = cv2.resize(bgr, size, interpolation=interpolation)
        self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = self._net.detect(bgr)
        found = []
        for row in () if rows is None else rows:
            x, y, w, h = (float(v) / factor for v in row[:4])
            left, top = max(0.0, x), max(0.0, y)
            right, bottom = min(float(width), x + w), min(float(height), y + h)
            if right <= left or bottom <= top:
                continue
            points = tuple((float(row[i]) / factor, float(row[i + 1]) / factor) for i in range(4, 14, 2))
            box = (left, top, right - left, bottom - top)
            found.append(Found(box, hog_like_rect(x, y, w, h), float(row[14]), points))
        return found
