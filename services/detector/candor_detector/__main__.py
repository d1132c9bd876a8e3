"""``python -m candor_detector``."""

from candor_detector.service import DetectorSettings, serve
from candor_kit import run_service

if __name__ == "__main__":
    run_service("detector", DetectorSettings.from_env, serve)
