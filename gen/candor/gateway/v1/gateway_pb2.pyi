import datetime

from candor.audit.v1 import audit_pb2 as _audit_pb2
from candor.common.v1 import common_pb2 as _common_pb2
from candor.ingest.v1 import ingest_pb2 as _ingest_pb2
from candor.matcher.v1 import matcher_pb2 as _matcher_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_CONFIRM: _ClassVar[Decision]
    DECISION_REJECT: _ClassVar[Decision]
    DECISION_PROBABLY_SAME: _ClassVar[Decision]
    DECISION_INCONCLUSIVE: _ClassVar[Decision]
    DECISION_PROBABLY_DIFFERENT: _ClassVar[Decision]
    DECISION_INSUFFICIENT: _ClassVar[Decision]

class CandidateStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANDIDATE_STATUS_UNSPECIFIED: _ClassVar[CandidateStatus]
    CANDIDATE_STATUS_PENDING: _ClassVar[CandidateStatus]
    CANDIDATE_STATUS_LEAD: _ClassVar[CandidateStatus]
    CANDIDATE_STATUS_REJECTED: _ClassVar[CandidateStatus]
    CANDIDATE_STATUS_DISPUTED: _ClassVar[CandidateStatus]

class Analysis(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANALYSIS_UNSPECIFIED: _ClassVar[Analysis]
    ANALYSIS_SUFFICIENT: _ClassVar[Analysis]
    ANALYSIS_INSUFFICIENT: _ClassVar[Analysis]

class PendingOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PENDING_ORDER_OLDEST_FIRST: _ClassVar[PendingOrder]
    PENDING_ORDER_NEWEST_FIRST: _ClassVar[PendingOrder]
    PENDING_ORDER_CASE: _ClassVar[PendingOrder]
DECISION_UNSPECIFIED: Decision
DECISION_CONFIRM: Decision
DECISION_REJECT: Decision
DECISION_PROBABLY_SAME: Decision
DECISION_INCONCLUSIVE: Decision
DECISION_PROBABLY_DIFFERENT: Decision
DECISION_INSUFFICIENT: Decision
CANDIDATE_STATUS_UNSPECIFIED: CandidateStatus
CANDIDATE_STATUS_PENDING: CandidateStatus
CANDIDATE_STATUS_LEAD: CandidateStatus
CANDIDATE_STATUS_REJECTED: CandidateStatus
CANDIDATE_STATUS_DISPUTED: CandidateStatus
ANALYSIS_UNSPECIFIED: Analysis
ANALYSIS_SUFFICIENT: Analysis
ANALYSIS_INSUFFICIENT: Analysis
PENDING_ORDER_OLDEST_FIRST: PendingOrder
PENDING_ORDER_NEWEST_FIRST: PendingOrder
PENDING_ORDER_CASE: PendingOrder

class EndSessionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EndSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSearchPhotoRequest(_message.Message):
    __slots__ = ("search_id", "rank")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    rank: int
    def __init__(self, search_id: _Optional[str] = ..., rank: _Optional[int] = ...) -> None: ...

class GetRecordPhotoRequest(_message.Message):
    __slots__ = ("record_id",)
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    def __init__(self, record_id: _Optional[str] = ...) -> None: ...

class Photo(_message.Message):
    __slots__ = ("image", "sha256", "face_box", "record_id", "search_id", "subject_id", "eyes", "origin", "stored_at", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FACE_BOX_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    EYES_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    STORED_AT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    sha256: str
    face_box: _common_pb2.Box
    record_id: str
    search_id: str
    subject_id: str
    eyes: _containers.RepeatedCompositeFieldContainer[_common_pb2.Point]
    origin: str
    stored_at: _timestamp_pb2.Timestamp
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, image: _Optional[bytes] = ..., sha256: _Optional[str] = ..., face_box: _Optional[_Union[_common_pb2.Box, _Mapping]] = ..., record_id: _Optional[str] = ..., search_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., eyes: _Optional[_Iterable[_Union[_common_pb2.Point, _Mapping]]] = ..., origin: _Optional[str] = ..., stored_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetCaseRequest(_message.Message):
    __slots__ = ("case_number",)
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    case_number: str
    def __init__(self, case_number: _Optional[str] = ...) -> None: ...

class CaseView(_message.Message):
    __slots__ = ("case_number", "searches")
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    case_number: str
    searches: _containers.RepeatedCompositeFieldContainer[SearchReview]
    def __init__(self, case_number: _Optional[str] = ..., searches: _Optional[_Iterable[_Union[SearchReview, _Mapping]]] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("image", "subject_id", "face_index", "metadata", "image_ref", "client_request_id")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    FACE_INDEX_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    IMAGE_REF_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    subject_id: str
    face_index: int
    metadata: _containers.ScalarMap[str, str]
    image_ref: str
    client_request_id: str
    def __init__(self, image: _Optional[bytes] = ..., subject_id: _Optional[str] = ..., face_index: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., image_ref: _Optional[str] = ..., client_request_id: _Optional[str] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("record_id", "created", "model", "quality")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    created: bool
    model: _common_pb2.ModelRef
    quality: _common_pb2.FaceQuality
    def __init__(self, record_id: _Optional[str] = ..., created: _Optional[bool] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., quality: _Optional[_Union[_common_pb2.FaceQuality, _Mapping]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("probe_image", "case_number", "purpose", "face_index", "max_candidates", "authorisation_reference", "client_request_id")
    PROBE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    FACE_INDEX_FIELD_NUMBER: _ClassVar[int]
    MAX_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    AUTHORISATION_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    probe_image: bytes
    case_number: str
    purpose: str
    face_index: int
    max_candidates: int
    authorisation_reference: str
    client_request_id: str
    def __init__(self, probe_image: _Optional[bytes] = ..., case_number: _Optional[str] = ..., purpose: _Optional[str] = ..., face_index: _Optional[int] = ..., max_candidates: _Optional[int] = ..., authorisation_reference: _Optional[str] = ..., client_request_id: _Optional[str] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("search_id", "candidates", "model", "notice", "probe_sha256", "trace_id", "probe_quality")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    PROBE_SHA256_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    PROBE_QUALITY_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    candidates: _containers.RepeatedCompositeFieldContainer[_common_pb2.Candidate]
    model: _common_pb2.ModelRef
    notice: str
    probe_sha256: str
    trace_id: str
    probe_quality: _common_pb2.FaceQuality
    def __init__(self, search_id: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[_common_pb2.Candidate, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., notice: _Optional[str] = ..., probe_sha256: _Optional[str] = ..., trace_id: _Optional[str] = ..., probe_quality: _Optional[_Union[_common_pb2.FaceQuality, _Mapping]] = ...) -> None: ...

class DetectFacesRequest(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    def __init__(self, image: _Optional[bytes] = ...) -> None: ...

class DetectFacesResponse(_message.Message):
    __slots__ = ("faces", "image_width", "image_height")
    FACES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[_common_pb2.DetectedFace]
    image_width: int
    image_height: int
    def __init__(self, faces: _Optional[_Iterable[_Union[_common_pb2.DetectedFace, _Mapping]]] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ...) -> None: ...

class DeleteSubjectRequest(_message.Message):
    __slots__ = ("subject_id", "reason", "client_request_id")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    reason: str
    client_request_id: str
    def __init__(self, subject_id: _Optional[str] = ..., reason: _Optional[str] = ..., client_request_id: _Optional[str] = ...) -> None: ...

class DeleteSubjectResponse(_message.Message):
    __slots__ = ("deleted_records", "unreadable_photos")
    DELETED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    UNREADABLE_PHOTOS_FIELD_NUMBER: _ClassVar[int]
    deleted_records: int
    unreadable_photos: int
    def __init__(self, deleted_records: _Optional[int] = ..., unreadable_photos: _Optional[int] = ...) -> None: ...

class DeleteRecordRequest(_message.Message):
    __slots__ = ("record_id", "reason")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    reason: str
    def __init__(self, record_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DeleteRecordResponse(_message.Message):
    __slots__ = ("deleted", "subject_id")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    subject_id: str
    def __init__(self, deleted: _Optional[bool] = ..., subject_id: _Optional[str] = ...) -> None: ...

class VerifyAuditRequest(_message.Message):
    __slots__ = ("checkpoints",)
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[_audit_pb2.Checkpoint]
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[_audit_pb2.Checkpoint, _Mapping]]] = ...) -> None: ...

class ExportCaseRequest(_message.Message):
    __slots__ = ("case_number",)
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    case_number: str
    def __init__(self, case_number: _Optional[str] = ...) -> None: ...

class ExportCaseResponse(_message.Message):
    __slots__ = ("case_number", "records", "verification", "exported_at", "exported_by", "scope")
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    EXPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPORTED_BY_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    case_number: str
    records: _containers.RepeatedCompositeFieldContainer[_audit_pb2.AuditRecord]
    verification: _audit_pb2.VerifyResponse
    exported_at: _timestamp_pb2.Timestamp
    exported_by: str
    scope: str
    def __init__(self, case_number: _Optional[str] = ..., records: _Optional[_Iterable[_Union[_audit_pb2.AuditRecord, _Mapping]]] = ..., verification: _Optional[_Union[_audit_pb2.VerifyResponse, _Mapping]] = ..., exported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exported_by: _Optional[str] = ..., scope: _Optional[str] = ...) -> None: ...

class ListAuditRecordsRequest(_message.Message):
    __slots__ = ("since", "until", "after_sequence", "limit", "kinds")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    after_sequence: int
    limit: int
    kinds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., after_sequence: _Optional[int] = ..., limit: _Optional[int] = ..., kinds: _Optional[_Iterable[str]] = ...) -> None: ...

class ListAuditRecordsResponse(_message.Message):
    __slots__ = ("records", "more")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[_audit_pb2.AuditRecord]
    more: bool
    def __init__(self, records: _Optional[_Iterable[_Union[_audit_pb2.AuditRecord, _Mapping]]] = ..., more: _Optional[bool] = ...) -> None: ...

class Review(_message.Message):
    __slots__ = ("reviewer", "role", "decision", "notes", "decided_at", "features")
    REVIEWER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    reviewer: str
    role: str
    decision: Decision
    notes: str
    decided_at: _timestamp_pb2.Timestamp
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, reviewer: _Optional[str] = ..., role: _Optional[str] = ..., decision: _Optional[_Union[Decision, str]] = ..., notes: _Optional[str] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., features: _Optional[_Iterable[str]] = ...) -> None: ...

class RecordAnalysisRequest(_message.Message):
    __slots__ = ("search_id", "sufficient", "notes")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    SUFFICIENT_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    sufficient: bool
    notes: str
    def __init__(self, search_id: _Optional[str] = ..., sufficient: _Optional[bool] = ..., notes: _Optional[str] = ...) -> None: ...

class RecordAnalysisResponse(_message.Message):
    __slots__ = ("analysis",)
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    analysis: Analysis
    def __init__(self, analysis: _Optional[_Union[Analysis, str]] = ...) -> None: ...

class SeedProficiencyTestRequest(_message.Message):
    __slots__ = ("probe_image", "candidate_image", "same_person", "case_number", "purpose", "shown_searcher", "shown_subject_id", "source", "shown_metadata", "client_request_id")
    class ShownMetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROBE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    SAME_PERSON_FIELD_NUMBER: _ClassVar[int]
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    SHOWN_SEARCHER_FIELD_NUMBER: _ClassVar[int]
    SHOWN_SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SHOWN_METADATA_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    probe_image: bytes
    candidate_image: bytes
    same_person: bool
    case_number: str
    purpose: str
    shown_searcher: str
    shown_subject_id: str
    source: str
    shown_metadata: _containers.ScalarMap[str, str]
    client_request_id: str
    def __init__(self, probe_image: _Optional[bytes] = ..., candidate_image: _Optional[bytes] = ..., same_person: _Optional[bool] = ..., case_number: _Optional[str] = ..., purpose: _Optional[str] = ..., shown_searcher: _Optional[str] = ..., shown_subject_id: _Optional[str] = ..., source: _Optional[str] = ..., shown_metadata: _Optional[_Mapping[str, str]] = ..., client_request_id: _Optional[str] = ...) -> None: ...

class SeedProficiencyTestResponse(_message.Message):
    __slots__ = ("search_id", "distance")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    distance: float
    def __init__(self, search_id: _Optional[str] = ..., distance: _Optional[float] = ...) -> None: ...

class ReviewedCandidate(_message.Message):
    __slots__ = ("candidate", "status", "reviews")
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REVIEWS_FIELD_NUMBER: _ClassVar[int]
    candidate: _common_pb2.Candidate
    status: CandidateStatus
    reviews: _containers.RepeatedCompositeFieldContainer[Review]
    def __init__(self, candidate: _Optional[_Union[_common_pb2.Candidate, _Mapping]] = ..., status: _Optional[_Union[CandidateStatus, str]] = ..., reviews: _Optional[_Iterable[_Union[Review, _Mapping]]] = ...) -> None: ...

class SearchReview(_message.Message):
    __slots__ = ("search_id", "case_number", "purpose", "searched_by", "searched_at", "model", "candidates", "reviews_needed", "authorisation_reference", "probe_sha256", "probe_image", "probe_quality", "analysis", "candidate_count", "score_blind", "proficiency_test")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    CASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    SEARCHED_BY_FIELD_NUMBER: _ClassVar[int]
    SEARCHED_AT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    REVIEWS_NEEDED_FIELD_NUMBER: _ClassVar[int]
    AUTHORISATION_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PROBE_SHA256_FIELD_NUMBER: _ClassVar[int]
    PROBE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    PROBE_QUALITY_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SCORE_BLIND_FIELD_NUMBER: _ClassVar[int]
    PROFICIENCY_TEST_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    case_number: str
    purpose: str
    searched_by: str
    searched_at: _timestamp_pb2.Timestamp
    model: _common_pb2.ModelRef
    candidates: _containers.RepeatedCompositeFieldContainer[ReviewedCandidate]
    reviews_needed: int
    authorisation_reference: str
    probe_sha256: str
    probe_image: bytes
    probe_quality: _common_pb2.FaceQuality
    analysis: Analysis
    candidate_count: int
    score_blind: bool
    proficiency_test: bool
    def __init__(self, search_id: _Optional[str] = ..., case_number: _Optional[str] = ..., purpose: _Optional[str] = ..., searched_by: _Optional[str] = ..., searched_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[ReviewedCandidate, _Mapping]]] = ..., reviews_needed: _Optional[int] = ..., authorisation_reference: _Optional[str] = ..., probe_sha256: _Optional[str] = ..., probe_image: _Optional[bytes] = ..., probe_quality: _Optional[_Union[_common_pb2.FaceQuality, _Mapping]] = ..., analysis: _Optional[_Union[Analysis, str]] = ..., candidate_count: _Optional[int] = ..., score_blind: _Optional[bool] = ..., proficiency_test: _Optional[bool] = ...) -> None: ...

class ListPendingReviewsRequest(_message.Message):
    __slots__ = ("limit", "offset", "order", "case_prefix", "purpose", "searched_before", "disputed_only", "partly_reviewed_only")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    CASE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    SEARCHED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    DISPUTED_ONLY_FIELD_NUMBER: _ClassVar[int]
    PARTLY_REVIEWED_ONLY_FIELD_NUMBER: _ClassVar[int]
    limit: int
    offset: int
    order: PendingOrder
    case_prefix: str
    purpose: str
    searched_before: _timestamp_pb2.Timestamp
    disputed_only: bool
    partly_reviewed_only: bool
    def __init__(self, limit: _Optional[int] = ..., offset: _Optional[int] = ..., order: _Optional[_Union[PendingOrder, str]] = ..., case_prefix: _Optional[str] = ..., purpose: _Optional[str] = ..., searched_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., disputed_only: _Optional[bool] = ..., partly_reviewed_only: _Optional[bool] = ...) -> None: ...

class ListPendingReviewsResponse(_message.Message):
    __slots__ = ("searches", "total", "more")
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    searches: _containers.RepeatedCompositeFieldContainer[SearchReview]
    total: int
    more: bool
    def __init__(self, searches: _Optional[_Iterable[_Union[SearchReview, _Mapping]]] = ..., total: _Optional[int] = ..., more: _Optional[bool] = ...) -> None: ...

class SubmitReviewRequest(_message.Message):
    __slots__ = ("search_id", "rank", "decision", "notes", "features")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    rank: int
    decision: Decision
    notes: str
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, search_id: _Optional[str] = ..., rank: _Optional[int] = ..., decision: _Optional[_Union[Decision, str]] = ..., notes: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ...) -> None: ...

class SubmitReviewResponse(_message.Message):
    __slots__ = ("review_id", "status")
    REVIEW_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    review_id: str
    status: CandidateStatus
    def __init__(self, review_id: _Optional[str] = ..., status: _Optional[_Union[CandidateStatus, str]] = ...) -> None: ...

class GetSearchRequest(_message.Message):
    __slots__ = ("search_id", "include_probe")
    SEARCH_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PROBE_FIELD_NUMBER: _ClassVar[int]
    search_id: str
    include_probe: bool
    def __init__(self, search_id: _Optional[str] = ..., include_probe: _Optional[bool] = ...) -> None: ...

class StartImportRequest(_message.Message):
    __slots__ = ("import_id", "source", "total", "model_id")
    IMPORT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    import_id: str
    source: str
    total: int
    model_id: str
    def __init__(self, import_id: _Optional[str] = ..., source: _Optional[str] = ..., total: _Optional[int] = ..., model_id: _Optional[str] = ...) -> None: ...

class ImportItem(_message.Message):
    __slots__ = ("item", "subject_id", "image", "image_ref", "metadata", "unreadable", "file_bytes", "keep_origin")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ITEM_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_REF_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    UNREADABLE_FIELD_NUMBER: _ClassVar[int]
    FILE_BYTES_FIELD_NUMBER: _ClassVar[int]
    KEEP_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    item: int
    subject_id: str
    image: bytes
    image_ref: str
    metadata: _containers.ScalarMap[str, str]
    unreadable: str
    file_bytes: int
    keep_origin: str
    def __init__(self, item: _Optional[int] = ..., subject_id: _Optional[str] = ..., image: _Optional[bytes] = ..., image_ref: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., unreadable: _Optional[str] = ..., file_bytes: _Optional[int] = ..., keep_origin: _Optional[str] = ...) -> None: ...

class SubmitImportItemsRequest(_message.Message):
    __slots__ = ("import_id", "items")
    IMPORT_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    import_id: str
    items: _containers.RepeatedCompositeFieldContainer[ImportItem]
    def __init__(self, import_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[ImportItem, _Mapping]]] = ...) -> None: ...

class SubmitImportItemsResponse(_message.Message):
    __slots__ = ("queued", "settled")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    queued: int
    settled: int
    def __init__(self, queued: _Optional[int] = ..., settled: _Optional[int] = ...) -> None: ...

class GetImportRequest(_message.Message):
    __slots__ = ("import_id", "with_done_items")
    IMPORT_ID_FIELD_NUMBER: _ClassVar[int]
    WITH_DONE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    import_id: str
    with_done_items: bool
    def __init__(self, import_id: _Optional[str] = ..., with_done_items: _Optional[bool] = ...) -> None: ...

class ReasonCount(_message.Message):
    __slots__ = ("reason", "count")
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    reason: _ingest_pb2.RejectReason
    count: int
    def __init__(self, reason: _Optional[_Union[_ingest_pb2.RejectReason, str]] = ..., count: _Optional[int] = ...) -> None: ...

class ImportStatus(_message.Message):
    __slots__ = ("record", "done", "enrolled", "duplicates", "rejected", "failed", "rejected_by_reason", "done_items")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    DONE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    record: _ingest_pb2.ImportRecord
    done: int
    enrolled: int
    duplicates: int
    rejected: int
    failed: int
    rejected_by_reason: _containers.RepeatedCompositeFieldContainer[ReasonCount]
    done_items: bytes
    def __init__(self, record: _Optional[_Union[_ingest_pb2.ImportRecord, _Mapping]] = ..., done: _Optional[int] = ..., enrolled: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[int] = ..., failed: _Optional[int] = ..., rejected_by_reason: _Optional[_Iterable[_Union[ReasonCount, _Mapping]]] = ..., done_items: _Optional[bytes] = ...) -> None: ...

class ListImportResultsRequest(_message.Message):
    __slots__ = ("import_id", "after_item", "limit", "problems_only")
    IMPORT_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_ITEM_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_ONLY_FIELD_NUMBER: _ClassVar[int]
    import_id: str
    after_item: int
    limit: int
    problems_only: bool
    def __init__(self, import_id: _Optional[str] = ..., after_item: _Optional[int] = ..., limit: _Optional[int] = ..., problems_only: _Optional[bool] = ...) -> None: ...

class ListImportResultsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_ingest_pb2.ItemResult]
    def __init__(self, results: _Optional[_Iterable[_Union[_ingest_pb2.ItemResult, _Mapping]]] = ...) -> None: ...

class StartReembedRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class ListReembedWorkRequest(_message.Message):
    __slots__ = ("model_id", "after", "limit")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    after: str
    limit: int
    def __init__(self, model_id: _Optional[str] = ..., after: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class SwitchGalleryModelRequest(_message.Message):
    __slots__ = ("model_id", "excused_record_ids", "reason")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    EXCUSED_RECORD_IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    excused_record_ids: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    def __init__(self, model_id: _Optional[str] = ..., excused_record_ids: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ...) -> None: ...

class GetGalleryModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
