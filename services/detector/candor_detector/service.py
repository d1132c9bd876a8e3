"""The detector service: gRPC and NATS adapters around decoding and FaceDetector."""

from __future__ import annotations

import asyncio
import hashlib
import queue
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import grpc
import structlog

from candor.common.v1 import common_pb2
from candor.detector.v1 import detector_pb2, detector_pb2_grpc
from candor_detector.ingest import DetectStage
from candor_faces.decoding import DecodedImage, DecodeLimits, decode_image
from candor_faces.detection import build_detector
from candor_faces.faces import AlignmentSpec, Face, FaceDetector
from candor_faces.onnx_faces import OnnxFaceDetector
from candor_kit import CommonSettings, EnvReader, ServiceHost, catalogue, rpc, subjects
from candor_kit.cores import usable_cores
from candor_kit.ingest import Stage, WorkerSettings, running_worker

DETECT_SUBJECT = subjects.DETECT
log = structlog.get_logger("candor.detector")


@dataclass(frozen=True)
class DetectorSettings:
    """Detector configuration, from the environment."""

    common: CommonSettings
    limits: DecodeLimits
    model_dir: str | None
    alignment: AlignmentSpec
    engine: str = "sface"
    model_files_dir: str | None = None
    model_pack: str | None = None
    providers: str = "cpu"
    accepted_licences: tuple[str, ...] = ()
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    #: Detections at once; 0: one per usable core.
    threads: int = 0

    @classmethod
    def from_env(cls, env: EnvReader | None = None) -> DetectorSettings:
        """Read the detector settings (catalogue.SERVICES["detector"]); raises ConfigError naming every bad value."""
        env = env or EnvReader()
        common = CommonSettings.read("detector", env)
        limits = DecodeLimits(
            max_bytes=env.get(catalogue.DETECTOR_MAX_IMAGE_BYTES),
            max_pixels=env.get(catalogue.DETECTOR_MAX_PIXELS),
            working_pixels=env.get(catalogue.DETECTOR_WORKING_PIXELS),
        )
        if limits.max_bytes > common.max_message_bytes:
            env.problem("CANDOR_DETECTOR_MAX_IMAGE_BYTES exceeds CANDOR_MAX_MESSAGE_BYTES")
        settings = cls(
            common=common,
            limits=limits,
            model_dir=env.get(catalogue.DLIB_MODEL_DIR) or None,
            model_files_dir=env.get(catalogue.MODEL_FILES_DIR) or None,
            alignment=AlignmentSpec(),
            engine=env.get(catalogue.DETECTOR_ENGINE),
            model_pack=env.get(catalogue.DETECTOR_MODEL_PACK) or None,
            providers=env.get(catalogue.ONNX_PROVIDERS),
            accepted_licences=tuple(env.get(catalogue.ACCEPT_MODEL_LICENCES)),
            worker=WorkerSettings.read(env),
            threads=env.get(catalogue.DETECTOR_THREADS),
        )
        env.done()
        return settings


class DetectionService:
    """Runs decode + detect on worker threads, one detector each (a detector keeps per-call state,
    so two threads never share one), off the event loop."""

    def __init__(self, detectors: Sequence[FaceDetector | OnnxFaceDetector], limits: DecodeLimits) -> None:
        self._detectors: queue.SimpleQueue[FaceDetector | OnnxFaceDetector] = queue.SimpleQueue()
        for detector in detectors:
            self._detectors.put(detector)
        self._limits = limits
        self._worker = ThreadPoolExecutor(max_workers=len(detectors), thread_name_prefix="detector")
        # Import photos enter the worker thread's queue one at a time, so a search waits behind
        # at most one of them however many the import worker has taken.
        self._background = asyncio.Semaphore(1)

    async def detect_in_background(self, request: detector_pb2.DetectRequest) -> detector_pb2.DetectResponse:
        """Detect for bulk work (an import): interactive requests go ahead of all but one of these."""
        async with self._background:
            return await self.detect(request)

    async def detect(self, request: detector_pb2.DetectRequest) -> detector_pb2.DetectResponse:
        """Decode the image, find its faces and describe them as protos."""
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        image, faces, digest = await loop.run_in_executor(self._worker, self._run, request.image)
        log.info(
            "faces_detected",
            count=len(faces),
            width=image.original_width,
            height=image.original_height,
            compute_ms=round((time.perf_counter() - start) * 1000, 2),
        )
        return detector_pb2.DetectResponse(
            faces=[_face_proto(face, request.include_chips) for face in faces],
            image_width=image.original_width,
            image_height=image.original_height,
            image_sha256=digest,
        )

    def _run(self, data: bytes) -> tuple[DecodedImage, list[Face], str]:
        """Decode, detect and hash on the worker thread, off the event loop."""
        image = decode_image(data, self._limits)
        detector = self._detectors.get()  # as many detectors as threads: one is always free here
        try:
            return image, detector.detect(image), hashlib.sha256(data).hexdigest()
        finally:
            self._detectors.put(detector)

    def close(self) -> None:
        """Stop the worker thread."""
        self._worker.shutdown(wait=True, cancel_futures=True)


def _face_proto(face: Face, include_chip: bool) -> common_pb2.DetectedFace:
    x, y, width, height = face.box
    proto = common_pb2.DetectedFace(
        box=common_pb2.Box(x=x, y=y, width=width, height=height),
        landmarks=[common_pb2.Point(x=px, y=py) for px, py in face.landmarks],
        eyes=[common_pb2.Point(x=px, y=py) for px, py in face.eyes or ()],
        quality=common_pb2.FaceQuality(
            face_size_px=face.face_size_px, blur=face.blur, detector_score=face.detector_score, turn=face.turn
        ),
    )
    if include_chip:
        proto.chip.CopyFrom(
            common_pb2.FaceChip(rgb=face.chip.tobytes(), width=face.chip.shape[1], height=face.chip.shape[0])
        )
    return proto


class DetectorServicer(detector_pb2_grpc.DetectorServiceServicer):
    """gRPC adapter."""

    def __init__(self, service: DetectionService) -> None:
        self._service = service

    @rpc("candor.detector.v1.DetectorService")
    async def Detect(  # noqa: N802 - gRPC method name
        self, request: detector_pb2.DetectRequest, context: grpc.aio.ServicerContext
    ) -> detector_pb2.DetectResponse:
        return await self._service.detect(request)


def configured_detector(settings: DetectorSettings) -> tuple[FaceDetector | OnnxFaceDetector, str]:
    """The detector CANDOR_DETECTOR_ENGINE names, with the id of the model its chips are cut for."""
    return build_detector(
        settings.engine,
        model_pack=settings.model_pack,
        providers=settings.providers,
        accepted_licences=settings.accepted_licences,
        model_dir=settings.model_dir,
        model_files_dir=settings.model_files_dir,
        alignment=settings.alignment,
    )


def detection_lanes(requested: int) -> int:
    """How many photos the detector detects at once: ``requested``, or one per usable core for 0;
    OpenCV's own thread pool is sized to the usable cores as well.

    Why both: OpenCV runs a parallel loop on its pool only while the pool is free and on the
    calling thread otherwise, so a lone detection spreads over every core (a search alone is
    answered as fast as with one lane) while detections that arrive together each run on a lane of
    their own instead of queueing (bench/search_load.py, 2 cores: 12.6 searches/s at 1 client and
    15.5 at 8, against 12.1 and 12.8 with one lane)."""
    cores = usable_cores()
    cv2.setNumThreads(cores)
    return requested or cores


async def serve(settings: DetectorSettings, stop: asyncio.Event) -> None:
    """Run the detector until ``stop`` is set."""
    threads = detection_lanes(settings.threads)
    built = [configured_detector(settings) for _ in range(threads)]
    model_id = built[0][1]
    service = DetectionService([detector for detector, _ in built], settings.limits)
    log.info("detector_threads", threads=threads)
    try:
        async with ServiceHost(settings.common, ["candor.detector.v1.DetectorService"]) as host:
            detector_pb2_grpc.add_DetectorServiceServicer_to_server(DetectorServicer(service), host.grpc.server)
            await host.start_grpc()
            assert host.bus is not None
            # The plain subject serves a deployment with one model; the model's own subject and
            # work lane let a second model's detectors run beside it (re-embedding a gallery).
            for subject in (DETECT_SUBJECT, subjects.detect_for(model_id)):
                await host.bus.serve(subject, "detector", detector_pb2.DetectRequest, service.detect)
            stage = DetectStage(host.bus, service.detect_in_background, model_id)
            worker = running_worker(host.bus, Stage("detect", model_id), stage, settings.worker, stop)
            await host.mark_serving()
            await stop.wait()
            if worker is not None:
                await worker
    finally:
        service.close()
