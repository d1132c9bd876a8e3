"""Candor's detector service: the face pipeline's detection (candor_faces) behind NATS and gRPC."""

from candor_detector.service import DETECT_SUBJECT, DetectorSettings, serve

__all__ = ["DETECT_SUBJECT", "DetectorSettings", "serve"]
