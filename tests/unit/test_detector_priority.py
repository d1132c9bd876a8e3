"""Import work does not starve searches: the detector lets an interactive request go ahead of all
but one queued import photo (real dlib detector, real photo). Several detections run at once, each
on a detector of its own; the thread count follows the cores the process may use."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

from candor.detector.v1 import detector_pb2
from candor_detector.service import DetectionService
from candor_faces.decoding import DecodedImage, DecodeLimits
from candor_faces.detection import build_detector
from candor_faces.faces import FaceDetector
from candor_kit.cores import usable_cores
from candor_kit.model_files import DLIB_LANDMARKS_5, dlib_model_file


async def test_a_search_waits_behind_at_most_one_import_photo(samples: Path) -> None:
    service = DetectionService([FaceDetector(dlib_model_file(DLIB_LANDMARKS_5))], DecodeLimits())
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


class Watched:
    """A real detector that records how many threads are inside it at once, and the most seen."""

    def __init__(self, detector: object) -> None:
        self._detector = detector
        self._inside = 0
        self._lock = threading.Lock()
        self.most = 0

    def detect(self, image: DecodedImage) -> object:
        with self._lock:
            self._inside += 1
            self.most = max(self.most, self._inside)
        try:
            return self._detector.detect(image)  # type: ignore[attr-defined]
        finally:
            with self._lock:
                self._inside -= 1


async def test_several_photos_are_detected_at_once_each_on_a_detector_of_its_own(samples: Path) -> None:
    detectors = [Watched(build_detector("sface")[0]) for _ in range(2)]
    service = DetectionService(detectors, DecodeLimits())  # type: ignore[arg-type]
    photos = [(samples / name).read_bytes() for name in ("t1.jpg", "obama.jpg", "biden.jpg", "obama2.jpg")] * 3
    try:
        alone = [await service.detect(detector_pb2.DetectRequest(image=photo)) for photo in photos]
        together = await asyncio.gather(*(service.detect(detector_pb2.DetectRequest(image=p)) for p in photos))
    finally:
        service.close()
    assert list(together) == alone  # the same faces, however the photos were spread over threads
    assert all(detector.most == 1 for detector in detectors), "two threads shared one detector"
    assert sum(detector.most for detector in detectors) == 2


def test_by_default_a_lane_a_core_and_opencv_s_pool_over_every_core() -> None:
    """Unset, CANDOR_DETECTOR_THREADS gives one lane per usable core, and OpenCV's pool keeps a
    thread per usable core too (a lone detection runs on all of them); one core: one of each. In a
    fresh interpreter, as OpenCV's thread count is the process's."""
    code = """
import os, cv2
from candor_detector.service import detection_lanes
from candor_kit import EnvReader, catalogue
from candor_kit.cores import usable_cores
cores = usable_cores()
print(cores, detection_lanes(EnvReader({}).get(catalogue.DETECTOR_THREADS)), cv2.getNumThreads())
print(detection_lanes(1), cv2.getNumThreads())
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
print(detection_lanes(0), cv2.getNumThreads())
"""
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    cores, lanes, pool = (int(word) for word in lines[0].split())
    assert cores == usable_cores()
    assert (lanes, pool) == (cores, cores), "the default is not a lane and an OpenCV thread a core"
    assert [int(word) for word in lines[1].split()] == [1, cores], "one lane asked for: OpenCV's pool still every core"
    assert [int(word) for word in lines[2].split()] == [1, 1], "one core allowed: one lane, one OpenCV thread"
