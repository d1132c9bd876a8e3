"""Embedding a dataset with the services' own code, or with plain dlib as the anchor."""

from __future__ import annotations

import asyncio
import io
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dlib
import numpy as np
from PIL import Image, UnidentifiedImageError

from candor_eval.dataset import LabelledImage
from candor_faces.decoding import DecodeLimits, decode_image
from candor_faces.detection import build_detector, dlib_chip_detector
from candor_faces.embedding import build_engine
from candor_faces.engines import EmbeddingEngine
from candor_faces.faces import FaceDetector
from candor_kit import CandorError, subjects
from candor_kit.bus import NatsLogin
from candor_kit.logging import configure_command_logging
from candor_kit.model_files import DLIB_LANDMARKS_5, DLIB_RESNET, dlib_model_file
from candor_kit.model_pack import sessions_on_one_thread
from candor_kit.wheel_packs import SFACE_MODEL_ID

if TYPE_CHECKING:
    from candor_faces.onnx_faces import OnnxFaceDetector


@dataclass(frozen=True)
class Embedded:
    """An image's vector, or why it has none (a failure to enrol)."""

    image: LabelledImage
    vector: np.ndarray | None
    failure: str | None = None
    faces_found: int = 0


def as_jpeg_or_png(data: bytes) -> bytes:
    """Return JPEG and PNG bytes as they are; re-encode other formats (PGM, GIF, ...) as PNG.

    Datasets come in formats the detector refuses on purpose; converting losslessly here keeps
    the service's own decoding path for everything else.
    """
    if data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n":
        return data
    try:
        image = Image.open(io.BytesIO(data))
        buffer = io.BytesIO()
        image.convert("RGB" if image.mode not in ("L", "I;16") else image.mode).save(buffer, format="PNG")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError("unreadable image") from exc
    return buffer.getvalue()


#: Which face of a photo with several an evaluation measures: ``centre``, the face whose box's
#: centre is nearest the photo's (what a cropped, centred dataset such as LFW means), or
#: ``largest``, the widest face (what a booking photo with a bystander means).
FACE_RULES = ("centre", "largest")


def chosen_face(boxes: list[tuple[float, float, float, float]], width: int, height: int, rule: str) -> int:
    """The index of the face the rule picks among ``boxes`` (x, y, width, height)."""
    if rule == "largest":
        return max(range(len(boxes)), key=lambda i: boxes[i][2] * boxes[i][3])
    if rule == "centre":

        def off_centre(i: int) -> float:
            x, y, w, h = boxes[i]
            return (x + w / 2 - width / 2) ** 2 + (y + h / 2 - height / 2) ** 2

        return min(range(len(boxes)), key=off_centre)
    raise ValueError(f"unknown face rule {rule!r}; known: {', '.join(FACE_RULES)}")


class CandorPipeline:
    """The detector and embedder code the services run, called in-process."""

    name = "candor"

    def __init__(
        self,
        engine: EmbeddingEngine,
        crop_fallback: bool = False,
        limits: DecodeLimits | None = None,
        finder: str = "yunet",
        detector: FaceDetector | OnnxFaceDetector | None = None,
        face_rule: str = "centre",
    ) -> None:
        self._detector = detector or dlib_chip_detector(finder, crop_fallback=crop_fallback)
        self._engine = engine
        self._limits = limits or DecodeLimits()
        self._face_rule = face_rule

    def embed(self, image: LabelledImage) -> Embedded:
        """The vector of the face the rule picks."""
        try:
            decoded = decode_image(as_jpeg_or_png(image.path.read_bytes()), self._limits)
        except (CandorError, ValueError) as exc:
            return Embedded(image, None, f"unreadable: {exc}")
        faces = self._detector.detect(decoded)
        if not faces:
            return Embedded(image, None, "no face found")
        size = (decoded.original_width, decoded.original_height)
        face = faces[chosen_face([f.box for f in faces], *size, self._face_rule)]
        return Embedded(image, self._engine.embed([face.chip])[0], faces_found=len(faces))


class PlainDlib:
    """The anchor: dlib as a plain user calls it (full resolution, upsampled once, dlib's own chip),
    on the face the same rule picks."""

    name = "plain-dlib"

    def __init__(self, face_rule: str = "centre") -> None:
        self._face_rule = face_rule
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(dlib_model_file(DLIB_LANDMARKS_5)))
        self._net = dlib.face_recognition_model_v1(str(dlib_model_file(DLIB_RESNET)))

    def embed(self, image: LabelledImage) -> Embedded:
        """The largest face's vector."""
        try:
            rgb = np.asarray(Image.open(image.path).convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            return Embedded(image, None, f"unreadable: {exc}")
        rects = list(self._detector(rgb, 1))
        if not rects:
            return Embedded(image, None, "no face found")
        boxes = [(rect.left(), rect.top(), rect.width(), rect.height()) for rect in rects]
        chosen = rects[chosen_face(boxes, rgb.shape[1], rgb.shape[0], self._face_rule)]
        shape = self._predictor(rgb, chosen)
        vector = np.asarray(self._net.compute_face_descriptor(rgb, shape), dtype=np.float32)
        return Embedded(image, vector, faces_found=len(rects))


def embed_all(
    pipeline: CandorPipeline | PlainDlib | StackPipeline,
    images: Iterable[LabelledImage],
    progress: Callable[[int], None] | None = None,
) -> list[Embedded]:
    """Embed every image on this process, reporting progress after each."""
    if isinstance(pipeline, StackPipeline):
        return pipeline.embed_all(list(images), progress)
    results = []
    for count, image in enumerate(images, start=1):
        results.append(pipeline.embed(image))
        if progress:
            progress(count)
    return results


@dataclass(frozen=True)
class PipelineSpec:
    """How to build an in-process pipeline, so each worker process can build its own."""

    kind: str = "candor"  # or "plain-dlib", the anchor
    #: The model of Candor's pipeline: the default SFace, or dlib's ResNet (``dlib-resnet-v1``).
    model: str = SFACE_MODEL_ID
    #: The face finder before dlib's chips (dlib's ResNet only): YuNet or dlib's HOG.
    finder: str = "yunet"
    crop_fallback: bool = False
    #: An ONNX model pack's folder: its detector and recogniser instead of YuNet and dlib's.
    pack: str | None = None
    accepted_licences: tuple[str, ...] = ()
    #: Which face of a photo with several is measured (FACE_RULES).
    face_rule: str = "centre"

    @property
    def name(self) -> str:
        """The pipeline's name in the report."""
        return PlainDlib.name if self.kind == "plain-dlib" else CandorPipeline.name

    def build(self) -> CandorPipeline | PlainDlib:
        """The pipeline, with its models loaded."""
        if self.kind == "plain-dlib":
            return PlainDlib(self.face_rule)
        if self.pack is not None or self.model == SFACE_MODEL_ID:
            # The services' own choice: SFace's pack for the default model, or the pack named.
            engine_name = "onnx" if self.pack is not None else "sface"
            licences = self.accepted_licences
            engine = build_engine(engine_name, None, None, self.pack, accepted_licences=licences)
            detector, _ = build_detector(engine_name, model_pack=self.pack, accepted_licences=licences)
            return CandorPipeline(engine, detector=detector, face_rule=self.face_rule)
        engine = build_engine("dlib", None, None)
        return CandorPipeline(engine, crop_fallback=self.crop_fallback, finder=self.finder, face_rule=self.face_rule)


_worker_pipeline: CandorPipeline | PlainDlib | None = None


def _start_worker(spec: PipelineSpec) -> None:
    global _worker_pipeline
    import cv2

    cv2.setNumThreads(1)  # one image per core: OpenCV's own threads would only contend
    sessions_on_one_thread()  # and onnxruntime's (SFace, a pack's models)
    configure_command_logging()  # a spawned worker starts with structlog's default, stdout
    _worker_pipeline = spec.build()


def _embed_in_worker(image: LabelledImage) -> Embedded:
    assert _worker_pipeline is not None
    return _worker_pipeline.embed(image)


def embed_parallel(spec: PipelineSpec, images: list[LabelledImage], workers: int) -> Iterator[Embedded]:
    """Embed the images on ``workers`` processes, yielding results in the images' order.

    Each worker loads the models once and reads its images itself; only paths go out and one
    vector per image comes back, so memory is the workers' models plus 128 floats an image.
    """
    if workers <= 1:
        pipeline = spec.build()
        yield from (pipeline.embed(image) for image in images)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process holding threads
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(spec,)) as pool:
        yield from pool.map(_embed_in_worker, images, chunksize=4)


class StackPipeline:
    """The running services themselves: the detector and embedder over NATS, as a search uses them."""

    name = "candor-stack"

    def __init__(self, login: NatsLogin, timeout_s: float = 60.0) -> None:
        self._login = login
        self._timeout = timeout_s

    def embed_all(self, images: list[LabelledImage], progress: Callable[[int], None] | None = None) -> list[Embedded]:
        """Embed every image through the stack, one at a time."""
        return asyncio.run(self._embed_all(images, progress))

    async def _embed_all(self, images: list[LabelledImage], progress: Callable[[int], None] | None) -> list[Embedded]:
        from candor.detector.v1 import detector_pb2
        from candor.embedder.v1 import embedder_pb2

        bus = await self._login.connect("candor-eval")
        results = []
        try:
            for count, image in enumerate(images, start=1):
                try:
                    data = as_jpeg_or_png(image.path.read_bytes())
                    detected = await bus.request(
                        subjects.DETECT,
                        detector_pb2.DetectRequest(image=data, include_chips=True),
                        detector_pb2.DetectResponse,
                        self._timeout,
                    )
                    if not detected.faces:
                        results.append(Embedded(image, None, "no face found"))
                    else:
                        reply = await bus.request(
                            subjects.EMBED,
                            embedder_pb2.EmbedRequest(chips=[detected.faces[0].chip]),
                            embedder_pb2.EmbedResponse,
                            self._timeout,
                        )
                        vector = np.asarray(reply.embeddings[0].values, dtype=np.float32)
                        results.append(Embedded(image, vector, faces_found=len(detected.faces)))
                except ValueError as exc:
                    results.append(Embedded(image, None, f"unreadable: {exc}"))
                except CandorError as exc:
                    results.append(Embedded(image, None, f"refused: {exc.message}"))
                if progress:
                    progress(count)
        finally:
            await bus.close()
        return results
