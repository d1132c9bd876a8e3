"""Face detection with an ONNX model pack's SCRFD detector (5 keypoints) and ArcFace alignment.

The pack's detection model is loaded through insightface's model_zoo (after every file of the
pack is checked against its SHA-256); faces are aligned to the recogniser's square input size
with insightface's ``norm_crop``, which is what the pack's recogniser was trained on.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np

from candor_detector.decoding import DecodedImage
from candor_detector.faces import Face
from candor_kit.model_pack import ModelPack, load_task_model

#: SCRFD's input: each photo is scaled to fit this square.
DETECTION_SIZE = 640


class OnnxFaceDetector:
    """A pack's SCRFD detector. Not thread-safe: callers run it on one thread at a time."""

    def __init__(self, pack: ModelPack, providers: str = "cpu", min_score: float = 0.5) -> None:
        self._model, self.providers = load_task_model(pack, "detection", providers)
        self._model.prepare(0, input_size=(DETECTION_SIZE, DETECTION_SIZE), det_thresh=min_score)
        self._chip_size = pack.input_size

    def detect(self, image: DecodedImage) -> list[Face]:
        """Every face in the image, largest first."""
        from insightface.utils.face_align import norm_crop

        bgr = np.ascontiguousarray(image.rgb[:, :, ::-1])
        boxes, keypoints = self._model.detect(bgr, input_size=(DETECTION_SIZE, DETECTION_SIZE))
        height, width = bgr.shape[:2]
        faces = []
        for (x1, y1, x2, y2, score), points in zip(boxes, keypoints, strict=True):
            with warnings.catch_warnings():
                # scikit-image deprecates the estimate() that insightface's norm_crop calls.
                warnings.simplefilter("ignore", FutureWarning)
                aligned = norm_crop(bgr, landmark=points, image_size=self._chip_size)
            chip = cv2.cvtColor(aligned, cv2.COLOR_BGR2RGB)
            left, top = max(0.0, float(x1)), max(0.0, float(y1))
            right, bottom = min(float(width), float(x2)), min(float(height), float(y2))
            scale = image.scale
            box = (
                round(left * scale),
                round(top * scale),
                round((right - left) * scale),
                round((bottom - top) * scale),
            )
            grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
            faces.append(
                Face(
                    box=box,
                    landmarks=tuple((float(x) * scale, float(y) * scale) for x, y in points),
                    chip=np.ascontiguousarray(chip),
                    face_size_px=box[2],
                    blur=float(cv2.Laplacian(grey, cv2.CV_64F).var()),
                    detector_score=float(score),
                )
            )
        faces.sort(key=lambda face: face.face_size_px, reverse=True)
        return faces
