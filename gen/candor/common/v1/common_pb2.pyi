from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Box(_message.Message):
    __slots__ = ("x", "y", "width", "height")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    width: int
    height: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class FaceQuality(_message.Message):
    __slots__ = ("face_size_px", "blur", "detector_score", "turn")
    FACE_SIZE_PX_FIELD_NUMBER: _ClassVar[int]
    BLUR_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_SCORE_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    face_size_px: int
    blur: float
    detector_score: float
    turn: float
    def __init__(self, face_size_px: _Optional[int] = ..., blur: _Optional[float] = ..., detector_score: _Optional[float] = ..., turn: _Optional[float] = ...) -> None: ...

class FaceChip(_message.Message):
    __slots__ = ("rgb", "width", "height")
    RGB_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    rgb: bytes
    width: int
    height: int
    def __init__(self, rgb: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class DetectedFace(_message.Message):
    __slots__ = ("box", "landmarks", "chip", "quality", "eyes")
    BOX_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    CHIP_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    EYES_FIELD_NUMBER: _ClassVar[int]
    box: Box
    landmarks: _containers.RepeatedCompositeFieldContainer[Point]
    chip: FaceChip
    quality: FaceQuality
    eyes: _containers.RepeatedCompositeFieldContainer[Point]
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., landmarks: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., chip: _Optional[_Union[FaceChip, _Mapping]] = ..., quality: _Optional[_Union[FaceQuality, _Mapping]] = ..., eyes: _Optional[_Iterable[_Union[Point, _Mapping]]] = ...) -> None: ...

class Origin(_message.Message):
    __slots__ = ("actor", "case_number", "purpose", "request_id")
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    actor: str
    case_number: str
    purpose: str
    request_id: str
    def __init__(self, actor: _Optional[str] = ..., case_number: _Optional[str] = ..., purpose: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("id", "version", "metric", "dimension", "threshold", "calibration_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: str
    metric: str
    dimension: int
    threshold: float
    calibration_id: str
    def __init__(self, id: _Optional[str] = ..., version: _Optional[str] = ..., metric: _Optional[str] = ..., dimension: _Optional[int] = ..., threshold: _Optional[float] = ..., calibration_id: _Optional[str] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("rank", "subject_id", "distance", "record_id", "model_id", "model_version", "calibrated_fmr")
    RANK_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CALIBRATED_FMR_FIELD_NUMBER: _ClassVar[int]
    rank: int
    subject_id: str
    distance: float
    record_id: str
    model_id: str
    model_version: str
    calibrated_fmr: float
    def __init__(self, rank: _Optional[int] = ..., subject_id: _Optional[str] = ..., distance: _Optional[float] = ..., record_id: _Optional[str] = ..., model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., calibrated_fmr: _Optional[float] = ...) -> None: ...
