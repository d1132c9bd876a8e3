"""Face detection with dlib's HOG detector, 5-point landmarks, alignment and quality figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

from candor_detector.decoding import DecodedImage

#: Photos smaller than this are upsampled once, so faces down to about 40 px are found.
UPSAMPLE_BELOW_PIXELS = 400_000


@dataclass(frozen=True)
class AlignmentSpec:
    """How chips are cut: dlib's ResNet expects 150x150 with 25% padding."""

    size: int = 150
    padding: float = 0.25


@dataclass(frozen=True)
class Face:
    """One detected face; box and landmarks are in original-image pixels."""

    box: tuple[int, int, int, int]  # x, y, width, height
    landmarks: tuple[tuple[float, float], ...]
    chip: np.ndarray  # size x size x 3, uint8 RGB
    face_size_px: int
    blur: float
    detector_score: float


class FaceDetector:
    """Finds faces with dlib's HOG detector and aligns them with the 5-point shape predictor.

    Not thread-safe: callers run it on one thread at a time.
    """

    def __init__(
        self,
        landmarks_model: Path,
        alignment: AlignmentSpec = AlignmentSpec(),
        min_score: float = 0.0,
        upsample_below_pixels: int = UPSAMPLE_BELOW_PIXELS,
        crop_fallback: bool = False,
    ) -> None:
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(landmarks_model))
        self._alignment = alignment
        self._min_score = min_score
        self._upsample_below = upsample_below_pixels
        self._crop_fallback = crop_fallback

    def detect(self, image: DecodedImage) -> list[Face]:
        """Every face in the image, largest first."""
        rgb = image.rgb
        height, width = rgb.shape[:2]
        # Small images are upsampled once so faces down to ~40 px are found.
        upsample = 1 if height * width < self._upsample_below else 0
        rects, scores, _ = self._detector.run(rgb, upsample, self._min_score)
        faces = [self._describe(rgb, rect, score, image.scale) for rect, score in zip(rects, scores, strict=True)]
        if not faces and self._crop_fallback:
            # A tightly cropped face (a passport-style crop) often defeats HOG: treat the whole
            # frame as the face box and let the landmarks align it. Score 0 marks the fallback.
            whole = dlib.rectangle(0, 0, width - 1, height - 1)
            faces = [self._describe(rgb, whole, 0.0, image.scale)]
        faces.sort(key=lambda face: face.face_size_px, reverse=True)
        return faces

    def _describe(self, rgb: np.ndarray, rect: dlib.rectangle, score: float, scale: float) -> Face:
        shape = self._predictor(rgb, rect)
        chip = dlib.get_face_chip(rgb, shape, size=self._alignment.size, padding=self._alignment.padding)
        height, width = rgb.shape[:2]
        left, top = max(0, rect.left()), max(0, rect.top())
        right, bottom = min(width, rect.right()), min(height, rect.bottom())
        box = (
            round(left * scale),
            round(top * scale),
            round((right - left) * scale),
            round((bottom - top) * scale),
        )
        landmarks = tuple((shape.part(i).x * scale, shape.part(i).y * scale) for i in range(shape.num_parts))
        grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
        blur = float(cv2.Laplacian(grey, cv2.CV_64F).var())
        return Face(
            box=box,
            landmarks=landmarks,
            chip=np.ascontiguousarray(chip),
            face_size_px=box[2],
            blur=blur,
            detector_score=float(score),
        )
