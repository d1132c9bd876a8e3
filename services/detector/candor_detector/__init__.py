"""Candor's detector service: decoding with limits, face detection (YuNet or HOG), alignment, quality."""

from candor_detector.decoding import DecodedImage, DecodeLimits, decode_image
from candor_detector.faces import AlignmentSpec, Face, FaceDetector, dlib_chip_detector
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
    "dlib_chip_detector",
    "serve",
]
