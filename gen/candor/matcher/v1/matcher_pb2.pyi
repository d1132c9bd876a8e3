import datetime

from candor.common.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnrollRequest(_message.Message):
    __slots__ = ("subject_id", "model", "embedding", "image_sha256", "metadata", "image_ref", "origin")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    IMAGE_REF_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    model: _common_pb2.ModelRef
    embedding: _common_pb2.Embedding
    image_sha256: str
    metadata: _containers.ScalarMap[str, str]
    image_ref: str
    origin: _common_pb2.Origin
    def __init__(self, subject_id: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., embedding: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ..., image_sha256: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., image_ref: _Optional[str] = ..., origin: _Optional[_Union[_common_pb2.Origin, _Mapping]] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("record_id", "created")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    created: bool
    def __init__(self, record_id: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("model", "embedding", "limit", "max_distance", "origin")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    embedding: _common_pb2.Embedding
    limit: int
    max_distance: float
    origin: _common_pb2.Origin
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., embedding: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ..., limit: _Optional[int] = ..., max_distance: _Optional[float] = ..., origin: _Optional[_Union[_common_pb2.Origin, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("candidates",)
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[_common_pb2.Candidate]
    def __init__(self, candidates: _Optional[_Iterable[_Union[_common_pb2.Candidate, _Mapping]]] = ...) -> None: ...

class DeleteSubjectRequest(_message.Message):
    __slots__ = ("subject_id", "model_id", "origin")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    model_id: str
    origin: _common_pb2.Origin
    def __init__(self, subject_id: _Optional[str] = ..., model_id: _Optional[str] = ..., origin: _Optional[_Union[_common_pb2.Origin, _Mapping]] = ...) -> None: ...

class DeleteSubjectResponse(_message.Message):
    __slots__ = ("deleted_records", "record_ids")
    DELETED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    RECORD_IDS_FIELD_NUMBER: _ClassVar[int]
    deleted_records: int
    record_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted_records: _Optional[int] = ..., record_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteRecordRequest(_message.Message):
    __slots__ = ("record_id", "origin")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    origin: _common_pb2.Origin
    def __init__(self, record_id: _Optional[str] = ..., origin: _Optional[_Union[_common_pb2.Origin, _Mapping]] = ...) -> None: ...

class DeleteRecordResponse(_message.Message):
    __slots__ = ("deleted", "subject_id")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    subject_id: str
    def __init__(self, deleted: _Optional[bool] = ..., subject_id: _Optional[str] = ...) -> None: ...

class GetGalleryRequest(_message.Message):
    __slots__ = ("model_id", "subject_id", "origin")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    subject_id: str
    origin: _common_pb2.Origin
    def __init__(self, model_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., origin: _Optional[_Union[_common_pb2.Origin, _Mapping]] = ...) -> None: ...

class GetGalleryResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: int
    def __init__(self, records: _Optional[int] = ...) -> None: ...

class GalleryModels(_message.Message):
    __slots__ = ("active", "target", "previous", "changed_at", "reembed_id")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    REEMBED_ID_FIELD_NUMBER: _ClassVar[int]
    active: _common_pb2.ModelRef
    target: _common_pb2.ModelRef
    previous: _common_pb2.ModelRef
    changed_at: _timestamp_pb2.Timestamp
    reembed_id: str
    def __init__(self, active: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., target: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., previous: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reembed_id: _Optional[str] = ...) -> None: ...

class BeginReembedRequest(_message.Message):
    __slots__ = ("target", "origin")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    target: _common_pb2.ModelRef
    origin: _common_pb2.Origin
    def __init__(self, target: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., origin: _Optional[_Union[_common_pb2.Origin, _Mapping]] = ...) -> None: ...

class GalleryRecord(_message.Message):
    __slots__ = ("record_id", "subject_id", "image_sha256", "origin", "image_ref", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    IMAGE_REF_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    subject_id: str
    image_sha256: str
    origin: str
    image_ref: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, record_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., image_sha256: _Optional[str] = ..., origin: _Optional[str] = ..., image_ref: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListMissingRecordsRequest(_message.Message):
    __slots__ = ("target_model_id", "after", "limit")
    TARGET_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    target_model_id: str
    after: str
    limit: int
    def __init__(self, target_model_id: _Optional[str] = ..., after: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListMissingRecordsResponse(_message.Message):
    __slots__ = ("records", "next")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[GalleryRecord]
    next: str
    def __init__(self, records: _Optional[_Iterable[_Union[GalleryRecord, _Mapping]]] = ..., next: _Optional[str] = ...) -> None: ...

class SwitchModelRequest(_message.Message):
    __slots__ = ("target_model_id", "excused_record_ids", "origin", "reason")
    TARGET_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    EXCUSED_RECORD_IDS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    target_model_id: str
    excused_record_ids: _containers.RepeatedScalarFieldContainer[str]
    origin: _common_pb2.Origin
    reason: str
    def __init__(self, target_model_id: _Optional[str] = ..., excused_record_ids: _Optional[_Iterable[str]] = ..., origin: _Optional[_Union[_common_pb2.Origin, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...
