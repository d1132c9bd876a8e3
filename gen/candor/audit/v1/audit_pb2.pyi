import datetime

from candor.common.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuditEvent(_message.Message):
    __slots__ = ("event_id", "kind", "occurred_at", "actor", "case_number", "purpose", "trace_id", "details_json")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    kind: str
    occurred_at: _timestamp_pb2.Timestamp
    actor: str
    case_number: str
    purpose: str
    trace_id: str
    details_json: str
    def __init__(self, event_id: _Optional[str] = ..., kind: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., case_number: _Optional[str] = ..., purpose: _Optional[str] = ..., trace_id: _Optional[str] = ..., details_json: _Optional[str] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("sequence", "event", "recorded_at", "previous_hash", "record_hash", "key_id", "signature")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_HASH_FIELD_NUMBER: _ClassVar[int]
    RECORD_HASH_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    event: AuditEvent
    recorded_at: _timestamp_pb2.Timestamp
    previous_hash: str
    record_hash: str
    key_id: str
    signature: str
    def __init__(self, sequence: _Optional[int] = ..., event: _Optional[_Union[AuditEvent, _Mapping]] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., previous_hash: _Optional[str] = ..., record_hash: _Optional[str] = ..., key_id: _Optional[str] = ..., signature: _Optional[str] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("sequence", "head_hash", "made_at", "key_id", "signature")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    MADE_AT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    head_hash: str
    made_at: str
    key_id: str
    signature: str
    def __init__(self, sequence: _Optional[int] = ..., head_hash: _Optional[str] = ..., made_at: _Optional[str] = ..., key_id: _Optional[str] = ..., signature: _Optional[str] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("checkpoints", "case_number")
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[Checkpoint]
    case_number: str
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[Checkpoint, _Mapping]]] = ..., case_number: _Optional[str] = ...) -> None: ...

class CaseManifest(_message.Message):
    __slots__ = ("case_number", "through_sequence", "sequences", "records_sha256", "made_at", "key_id", "signature")
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    THROUGH_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    RECORDS_SHA256_FIELD_NUMBER: _ClassVar[int]
    MADE_AT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    case_number: str
    through_sequence: int
    sequences: _containers.RepeatedScalarFieldContainer[int]
    records_sha256: str
    made_at: str
    key_id: str
    signature: str
    def __init__(self, case_number: _Optional[str] = ..., through_sequence: _Optional[int] = ..., sequences: _Optional[_Iterable[int]] = ..., records_sha256: _Optional[str] = ..., made_at: _Optional[str] = ..., key_id: _Optional[str] = ..., signature: _Optional[str] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("ok", "records_checked", "first_bad_sequence", "problem", "head_hash", "signatures_checked", "checkpoints_checked", "public_key_pem", "latest_checkpoint", "missing", "missing_events", "case_manifest")
    OK_FIELD_NUMBER: _ClassVar[int]
    RECORDS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    FIRST_BAD_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_CHECKED_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    LATEST_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    MISSING_EVENTS_FIELD_NUMBER: _ClassVar[int]
    CASE_MANIFEST_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    records_checked: int
    first_bad_sequence: int
    problem: str
    head_hash: str
    signatures_checked: int
    checkpoints_checked: int
    public_key_pem: str
    latest_checkpoint: Checkpoint
    missing: _containers.RepeatedCompositeFieldContainer[MissingEvent]
    missing_events: int
    case_manifest: CaseManifest
    def __init__(self, ok: _Optional[bool] = ..., records_checked: _Optional[int] = ..., first_bad_sequence: _Optional[int] = ..., problem: _Optional[str] = ..., head_hash: _Optional[str] = ..., signatures_checked: _Optional[int] = ..., checkpoints_checked: _Optional[int] = ..., public_key_pem: _Optional[str] = ..., latest_checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., missing: _Optional[_Iterable[_Union[MissingEvent, _Mapping]]] = ..., missing_events: _Optional[int] = ..., case_manifest: _Optional[_Union[CaseManifest, _Mapping]] = ...) -> None: ...

class MissingEvent(_message.Message):
    __slots__ = ("stream_sequence", "event_id", "kind")
    STREAM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    stream_sequence: int
    event_id: str
    kind: str
    def __init__(self, stream_sequence: _Optional[int] = ..., event_id: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("case_number", "actor", "since", "until", "limit", "after_sequence", "kinds", "event_id", "wait_for_stream_sequence", "origin", "event_ids", "case_numbers")
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_FOR_STREAM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    EVENT_IDS_FIELD_NUMBER: _ClassVar[int]
    CASE_NUMBERS_FIELD_NUMBER: _ClassVar[int]
    case_number: str
    actor: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    limit: int
    after_sequence: int
    kinds: _containers.RepeatedScalarFieldContainer[str]
    event_id: str
    wait_for_stream_sequence: int
    origin: _common_pb2.Origin
    event_ids: _containers.RepeatedScalarFieldContainer[str]
    case_numbers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, case_number: _Optional[str] = ..., actor: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ..., after_sequence: _Optional[int] = ..., kinds: _Optional[_Iterable[str]] = ..., event_id: _Optional[str] = ..., wait_for_stream_sequence: _Optional[int] = ..., origin: _Optional[_Union[_common_pb2.Origin, _Mapping]] = ..., event_ids: _Optional[_Iterable[str]] = ..., case_numbers: _Optional[_Iterable[str]] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("records", "more")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    more: bool
    def __init__(self, records: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ..., more: _Optional[bool] = ...) -> None: ...
