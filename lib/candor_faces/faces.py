"""Faces for dlib's ResNet: a face finder (YuNet or dlib's HOG), 5-point landmarks, aligned chips.

Whichever finder locates a face, dlib's 5-point shape predictor places the landmarks and dlib cuts
the chip, exactly as dlib's own ResNet was trained and as Candor has always done it: the finder
changes where faces are found, never how a found face is turned into a vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import dlib
import numpy as np

from candor_faces.decoding import DecodedImage

#: Photos smaller than this are upsampled once for HOG, so faces down to about 40 px are found.
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
    #: The centres of the two eyes, the image's left first: what a reviewer's aligned view turns
    #: and scales both faces by, whichever model's points the landmarks are.
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None
    #: A point on the nose's midline (YuNet's nose tip, dlib's nose base), for the head's turn.
    nose: tuple[float, float] | None = None

    @property
    def turn(self) -> float:
        """How far the nose sits off the eyes' midline, as a share of the eyes' distance, measured
        along the eyes' line (so a tilted head does not read as turned); 0.0 when not known."""
        if self.eyes is None or self.nose is None:
            return 0.0
        (x1, y1), (x2, y2) = self.eyes
        apart = math.hypot(x2 - x1, y2 - y1)
        if apart == 0:
            return 0.0
        middle = ((x1 + x2) / 2, (y1 + y2) / 2)
        along = ((self.nose[0] - middle[0]) * (x2 - x1) + (self.nose[1] - middle[1]) * (y2 - y1)) / apart
        return abs(along) / apart


def ordered_eyes(first: tuple[float, float], second: tuple[float, float]) -> tuple[tuple[float, float], ...]:
    """Two eye centres, the image's left first."""
    return (first, second) if first[0] <= second[0] else (second, first)


def dlib_eyes(landmarks: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], tuple[float, float]]:
    """The eye centres of dlib's 5-point landmarks (two corners of each eye, then the nose)."""
    (a, b), (c, d) = landmarks[0:2], landmarks[2:4]
    first = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
    second = ((c[0] + d[0]) / 2, (c[1] + d[1]) / 2)
    return ordered_eyes(first, second)  # type: ignore[return-value]


@dataclass(frozen=True)
class Found:
    """A face a finder located, in the pixels of the image it was given.

    ``box`` is what the finder reports (x, y, width, height); ``rect`` is the square that dlib's
    5-point shape predictor expects, which is the box of dlib's HOG detector.
    """

    box: tuple[float, float, float, float]
    rect: dlib.rectangle
    score: float
    #: The finder's own five points (eyes, nose tip, mouth corners; the person's right first),
    #: where it gives them: what ArcFace-style alignment needs.
    points: tuple[tuple[float, float], ...] | None = None


class FaceFinder(Protocol):
    """Locates faces in an RGB image."""

    name: str

    def find(self, rgb: np.ndarray) -> list[Found]:
        """Every face found."""
        ...


class HogFinder:
    """dlib's HOG frontal face detector; small photos are upsampled once."""

    name = "dlib-hog"

    def __init__(self, min_score: float = 0.0, upsample_below_pixels: int = UPSAMPLE_BELOW_PIXELS) -> None:
        self._detector = dlib.get_frontal_face_detector()
        self._min_score = min_score
        self._upsample_below = upsample_below_pixels

    def find(self, rgb: np.ndarray) -> list[Found]:
        """Every face HOG finds, with its detection score."""
        height, width = rgb.shape[:2]
        upsample = 1 if height * width < self._upsample_below else 0
        rects, scores, _ = self._detector.run(rgb, upsample, self._min_score)
        found = []
        for rect, score in zip(rects, scores, strict=True):
            left, top = max(0, rect.left()), max(0, rect.top())
            right, bottom = min(width, rect.right()), min(height, rect.bottom())
            found.append(Found((left, top, right - left, bottom - top), rect, float(score)))
        return found


class FaceDetector:
    """Finds faces (dlib's HOG unless another finder is given) and aligns them with dlib's 5-point
    shape predictor into the chips dlib's ResNet expects.

    Not thread-safe: callers run it on one thread at a time.
    """

    def __init__(
        self,
        landmarks_model: Path,
        alignment: AlignmentSpec = AlignmentSpec(),
        min_score: float = 0.0,
        upsample_below_pixels: int = UPSAMPLE_BELOW_PIXELS,
        crop_fallback: bool = False,
        finder: FaceFinder | None = None,
    ) -> None:
        self.finder: FaceFinder = finder or HogFinder(min_score, upsample_below_pixels)
        self._predictor = dlib.shape_predictor(str(landmarks_model))
        self._alignment = alignment
        self._crop_fallback = crop_fallback

    def detect(self, image: DecodedImage) -> list[Face]:
        """Every face in the image, largest first."""
        rgb = image.rgb
        faces = [self._describe(rgb, found, image.scale) for found in self.finder.find(rgb)]
        if not faces and self._crop_fallback:
            # A tightly cropped face (a passport-style crop) often defeats a detector: treat the
            # whole frame as the face box and let the landmarks align it. Score 0 marks the fallback.
            height, width = rgb.shape[:2]
            whole = dlib.rectangle(0, 0, width - 1, height - 1)
            faces = [self._describe(rgb, Found((0, 0, width, height), whole, 0.0), image.scale)]
        faces.sort(key=lambda face: face.face_size_px, reverse=True)
        return faces

    def _describe(self, rgb: np.ndarray, found: Found, scale: float) -> Face:
        shape = self._predictor(rgb, found.rect)
        chip = dlib.get_face_chip(rgb, shape, size=self._alignment.size, padding=self._alignment.padding)
        x, y, width, height = found.box
        box = (round(x * scale), round(y * scale), round(width * scale), round(height * scale))
        landmarks = tuple((shape.part(i).x * scale, shape.part(i).y * scale) for i in range(shape.num_parts))
        grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
        blur = float(cv2.Laplacian(grey, cv2.CV_64F).var())
        return Face(
            box=box,
            landmarks=landmarks,
            chip=np.ascontiguousarray(chip),
            face_size_px=box[2],
            blur=blur,
            detector_score=found.score,
            eyes=dlib_eyes(landmarks),
            nose=landmarks[4] if len(landmarks) > 4 else None,
        )
