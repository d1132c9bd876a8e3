import datetime

from candor.common.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_ENROLLED: _ClassVar[Outcome]
    OUTCOME_DUPLICATE: _ClassVar[Outcome]
    OUTCOME_REJECTED: _ClassVar[Outcome]
    OUTCOME_FAILED: _ClassVar[Outcome]

class RejectReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REJECT_REASON_UNSPECIFIED: _ClassVar[RejectReason]
    REJECT_REASON_NO_FACE: _ClassVar[RejectReason]
    REJECT_REASON_SEVERAL_FACES: _ClassVar[RejectReason]
    REJECT_REASON_TOO_SMALL: _ClassVar[RejectReason]
    REJECT_REASON_BLURRY: _ClassVar[RejectReason]
    REJECT_REASON_UNREADABLE: _ClassVar[RejectReason]
    REJECT_REASON_TOO_LARGE: _ClassVar[RejectReason]
    REJECT_REASON_INVALID: _ClassVar[RejectReason]
    REJECT_REASON_EXPUNGED: _ClassVar[RejectReason]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_ENROLLED: Outcome
OUTCOME_DUPLICATE: Outcome
OUTCOME_REJECTED: Outcome
OUTCOME_FAILED: Outcome
REJECT_REASON_UNSPECIFIED: RejectReason
REJECT_REASON_NO_FACE: RejectReason
REJECT_REASON_SEVERAL_FACES: RejectReason
REJECT_REASON_TOO_SMALL: RejectReason
REJECT_REASON_BLURRY: RejectReason
REJECT_REASON_UNREADABLE: RejectReason
REJECT_REASON_TOO_LARGE: RejectReason
REJECT_REASON_INVALID: RejectReason
REJECT_REASON_EXPUNGED: RejectReason

class ImportRules(_message.Message):
    __slots__ = ("min_face_px", "min_blur")
    MIN_FACE_PX_FIELD_NUMBER: _ClassVar[int]
    MIN_BLUR_FIELD_NUMBER: _ClassVar[int]
    min_face_px: int
    min_blur: float
    def __init__(self, min_face_px: _Optional[int] = ..., min_blur: _Optional[float] = ...) -> None: ...

class ItemRef(_message.Message):
    __slots__ = ("import_id", "item", "subject_id", "image_ref", "metadata", "submitted_by", "import_started_at", "model_id", "keep_origin", "face_box")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IMPORT_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_REF_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_BY_FIELD_NUMBER: _ClassVar[int]
    IMPORT_STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    KEEP_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    FACE_BOX_FIELD_NUMBER: _ClassVar[int]
    import_id: str
    item: int
    subject_id: str
    image_ref: str
    metadata: _containers.ScalarMap[str, str]
    submitted_by: str
    import_started_at: _timestamp_pb2.Timestamp
    model_id: str
    keep_origin: str
    face_box: _common_pb2.Box
    def __init__(self, import_id: _Optional[str] = ..., item: _Optional[int] = ..., subject_id: _Optional[str] = ..., image_ref: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., submitted_by: _Optional[str] = ..., import_started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model_id: _Optional[str] = ..., keep_origin: _Optional[str] = ..., face_box: _Optional[_Union[_common_pb2.Box, _Mapping]] = ...) -> None: ...

class DetectWork(_message.Message):
    __slots__ = ("item", "image", "rules")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    item: ItemRef
    image: bytes
    rules: ImportRules
    def __init__(self, item: _Optional[_Union[ItemRef, _Mapping]] = ..., image: _Optional[bytes] = ..., rules: _Optional[_Union[ImportRules, _Mapping]] = ...) -> None: ...

class EmbedWork(_message.Message):
    __slots__ = ("item", "image_sha256", "chip", "quality")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    CHIP_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    item: ItemRef
    image_sha256: str
    chip: _common_pb2.FaceChip
    quality: _common_pb2.FaceQuality
    def __init__(self, item: _Optional[_Union[ItemRef, _Mapping]] = ..., image_sha256: _Optional[str] = ..., chip: _Optional[_Union[_common_pb2.FaceChip, _Mapping]] = ..., quality: _Optional[_Union[_common_pb2.FaceQuality, _Mapping]] = ...) -> None: ...

class MatchWork(_message.Message):
    __slots__ = ("item", "image_sha256", "model", "embedding")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    item: ItemRef
    image_sha256: str
    model: _common_pb2.ModelRef
    embedding: _common_pb2.Embedding
    def __init__(self, item: _Optional[_Union[ItemRef, _Mapping]] = ..., image_sha256: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., embedding: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ...) -> None: ...

class ItemResult(_message.Message):
    __slots__ = ("item", "outcome", "reason", "detail", "record_id", "image_sha256", "model", "finished_at", "stage")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    item: ItemRef
    outcome: Outcome
    reason: RejectReason
    detail: str
    record_id: str
    image_sha256: str
    model: _common_pb2.ModelRef
    finished_at: _timestamp_pb2.Timestamp
    stage: str
    def __init__(self, item: _Optional[_Union[ItemRef, _Mapping]] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., reason: _Optional[_Union[RejectReason, str]] = ..., detail: _Optional[str] = ..., record_id: _Optional[str] = ..., image_sha256: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stage: _Optional[str] = ...) -> None: ...

class ImportRecord(_message.Message):
    __slots__ = ("import_id", "source", "total", "started_by", "started_at", "rules", "finished_at", "model_id")
    IMPORT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    STARTED_BY_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    import_id: str
    source: str
    total: int
    started_by: str
    started_at: _timestamp_pb2.Timestamp
    rules: ImportRules
    finished_at: _timestamp_pb2.Timestamp
    model_id: str
    def __init__(self, import_id: _Optional[str] = ..., source: _Optional[str] = ..., total: _Optional[int] = ..., started_by: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rules: _Optional[_Union[ImportRules, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model_id: _Optional[str] = ...) -> None: ...
