"""Import work does not starve searches: the detector lets an interactive request go ahead of all
but one queued import photo (real dlib detector, real photo)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from candor.detector.v1 import detector_pb2
from candor_detector.service import DetectionService
from candor_faces.decoding import DecodeLimits
from candor_faces.faces import FaceDetector
from candor_kit.model_files import DLIB_LANDMARKS_5, dlib_model_file


async def test_a_search_waits_behind_at_most_one_import_photo(samples: Path) -> None:
    service = DetectionService(FaceDetector(dlib_model_file(DLIB_LANDMARKS_5)), DecodeLimits())
    request = detector_pb2.DetectRequest(image=(samples / "t1.jpg").read_bytes())
    finished: list[str] = []

    async def run(name: str, background: bool) -> None:
        await (service.detect_in_background if background else service.detect)(request)
        finished.append(name)

    try:
        imports = [asyncio.create_task(run(f"import-{n}", background=True)) for n in range(4)]
        await asyncio.sleep(0.01)  # the import worker has taken its four photos
        await run("search", background=False)
        await asyncio.gather(*imports)
    finally:
        service.close()
    assert finished == ["import-0", "search", "import-1", "import-2", "import-3"]
