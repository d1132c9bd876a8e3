"""Face detection for an ONNX model pack: the pack's detector, and alignment to its recogniser.

The pack's detector is SCRFD (insightface's, loaded through insightface's model_zoo) or, for a
pack whose manifest says ``preprocessing_version: opencv-yunet-1`` (the SFace pack), YuNet through
OpenCV. Either gives five points per face, and faces are aligned to the recogniser's square input
with insightface's ``norm_crop`` (the ArcFace template, which SFace was trained on too). Every
file of the pack is checked against its SHA-256 first.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import cv2
import numpy as np

from candor_faces.decoding import DecodedImage
from candor_faces.faces import Face, ordered_eyes
from candor_faces.yunet import YuNetFinder
from candor_kit.model_pack import YUNET_DETECTION, ModelPack, checked_task_file, load_task_model

#: SCRFD's input: each photo is scaled to fit this square.
DETECTION_SIZE = 640
#: A photo whose longer side is under this gets a black border of half its size on each side
#: before SCRFD sees it: scaled up to 640 px, a face that fills a small frame (a 92 x 112 mugshot
#: thumbnail) is found in none of 60 att_orl photos without the border and in all 60 with it.
PAD_BELOW = 320
#: Chips are scaled to this size (dlib's chips') before their sharpness is measured.
SHARPNESS_SIZE = 150


class OnnxFaceDetector:
    """A pack's face detector. Not thread-safe: callers run it on one thread at a time."""

    def __init__(
        self,
        pack: ModelPack,
        providers: str = "cpu",
        min_score: float = 0.5,
        accepted_licences: Iterable[str] = (),
    ) -> None:
        self._chip_size = pack.input_size
        self._yunet: YuNetFinder | None = None
        if pack.detection_family == YUNET_DETECTION:
            self._yunet = YuNetFinder(checked_task_file(pack, "detection", accepted_licences))
            self.providers = ["opencv"]
        else:
            self._model, self.providers = load_task_model(pack, "detection", providers, accepted_licences)
            self._model.prepare(0, input_size=(DETECTION_SIZE, DETECTION_SIZE), det_thresh=min_score)

    def _find(self, image: DecodedImage) -> list[tuple[tuple[float, float, float, float], float, np.ndarray]]:
        """(x1, y1, x2, y2), score and five points of every face, in the decoded image's pixels."""
        if self._yunet is not None:
            return [
                ((x, y, x + w, y + h), found.score, np.array(found.points, dtype=np.float32))
                for found in self._yunet.find(image.rgb)
                for x, y, w, h in [found.box]
            ]
        bgr = np.ascontiguousarray(image.rgb[:, :, ::-1])
        height, width = bgr.shape[:2]
        pad_y, pad_x = (height // 2, width // 2) if max(height, width) < PAD_BELOW else (0, 0)
        if pad_x or pad_y:
            bgr = cv2.copyMakeBorder(bgr, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        boxes, keypoints = self._model.detect(bgr, input_size=(DETECTION_SIZE, DETECTION_SIZE))
        shift = np.array([pad_x, pad_y], dtype=np.float32)
        return [
            ((x1 - pad_x, y1 - pad_y, x2 - pad_x, y2 - pad_y), score, points - shift)
            for (x1, y1, x2, y2, score), points in zip(boxes, keypoints, strict=True)
        ]

    def detect(self, image: DecodedImage) -> list[Face]:
        """Every face in the image, largest first."""
        from insightface.utils.face_align import norm_crop

        height, width = image.rgb.shape[:2]
        faces = []
        for (x1, y1, x2, y2), score, points in self._find(image):
            with warnings.catch_warnings():
                # scikit-image deprecates the estimate() that insightface's norm_crop calls.
                warnings.simplefilter("ignore", FutureWarning)
                # A warp moves pixels whatever their channel order: the RGB chip comes straight
                # from the RGB photo, with no copy of the whole photo as BGR first.
                chip = norm_crop(image.rgb, landmark=points, image_size=self._chip_size)
            left, top = max(0.0, float(x1)), max(0.0, float(y1))
            right, bottom = min(float(width), float(x2)), min(float(height), float(y2))
            scale = image.scale
            box = (
                round(left * scale),
                round(top * scale),
                round((right - left) * scale),
                round((bottom - top) * scale),
            )
            # Sharpness at dlib's chip size, whatever this recogniser's: the enrolment and probe
            # rules (CANDOR_GATEWAY_MIN_ENROL_BLUR, the policy's min_blur) then mean one thing for
            # every model. On a tighter 112 px chip the same blurred photo scores twice as sharp.
            grey = cv2.cvtColor(
                cv2.resize(chip, (SHARPNESS_SIZE, SHARPNESS_SIZE), interpolation=cv2.INTER_LINEAR), cv2.COLOR_RGB2GRAY
            )
            landmarks = tuple((float(x) * scale, float(y) * scale) for x, y in points)
            faces.append(
                Face(
                    box=box,
                    landmarks=landmarks,
                    # The finder's five points start with the two eye centres.
                    eyes=ordered_eyes(landmarks[0], landmarks[1]),  # type: ignore[arg-type]
                    nose=landmarks[2],
                    chip=np.ascontiguousarray(chip),
                    face_size_px=box[2],
                    blur=float(cv2.Laplacian(grey, cv2.CV_64F).var()),
                    detector_score=float(score),
                )
            )
        faces.sort(key=lambda face: face.face_size_px, reverse=True)
        return faces
