"""Candor's detector service: decoding with limits, HOG face detection, alignment, quality."""

from candor_detector.decoding import DecodedImage, DecodeLimits, decode_image
from candor_detector.faces import AlignmentSpec, Face, FaceDetector
from candor_detector.service import DETECT_SUBJECT, DetectorSettings, serve

__all__ = [
    "DETECT_SUBJECT",
    "AlignmentSpec",
    "DecodeLimits",
    "DecodedImage",
    "DetectorSettings",
    "Face",
    "FaceDetector",
    "decode_image",
    "serve",
]
