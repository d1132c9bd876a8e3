import datetime

from candor.gateway.v1 import gateway_pb2 as _gateway_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LifecycleEvent(_message.Message):
    __slots__ = ("record_sequence", "kind", "event_id", "occurred_at", "actor", "case_number", "purpose", "search_id", "rank", "subject_id", "record_id", "status", "settled_by_supervisor", "candidates", "import_id", "import_counts", "reason")
    RECORD_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SETTLED_BY_SUPERVISOR_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    IMPORT_ID_FIELD_NUMBER: _ClassVar[int]
    IMPORT_COUNTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    record_sequence: int
    kind: str
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    actor: str
    case_number: str
    purpose: str
    search_id: str
    rank: int
    subject_id: str
    record_id: str
    status: _gateway_pb2.CandidateStatus
    settled_by_supervisor: bool
    candidates: int
    import_id: str
    import_counts: ImportCounts
    reason: str
    def __init__(self, record_sequence: _Optional[int] = ..., kind: _Optional[str] = ..., event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., case_number: _Optional[str] = ..., purpose: _Optional[str] = ..., search_id: _Optional[str] = ..., rank: _Optional[int] = ..., subject_id: _Optional[str] = ..., record_id: _Optional[str] = ..., status: _Optional[_Union[_gateway_pb2.CandidateStatus, str]] = ..., settled_by_supervisor: _Optional[bool] = ..., candidates: _Optional[int] = ..., import_id: _Optional[str] = ..., import_counts: _Optional[_Union[ImportCounts, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ImportCounts(_message.Message):
    __slots__ = ("total", "enrolled", "duplicates", "rejected", "failed")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    total: int
    enrolled: int
    duplicates: int
    rejected: int
    failed: int
    def __init__(self, total: _Optional[int] = ..., enrolled: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...
