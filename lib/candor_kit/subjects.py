"""The NATS subjects of the architecture, who serves and who calls each, declared once.

Services import their subjects from here; the NATS permissions in ``deploy/`` are checked against
``nats_permissions`` so a deployment grants each service exactly what this table says it uses.
"""

from __future__ import annotations

from dataclasses import dataclass

DETECT = "candor.detector.v1.detect"
EMBED = "candor.embedder.v1.embed"
EMBED_MODEL = "candor.embedder.v1.model"
MATCH_ENROLL = "candor.matcher.v1.enroll"
MATCH_SEARCH = "candor.matcher.v1.search"
MATCH_DELETE_SUBJECT = "candor.matcher.v1.delete_subject"
MATCH_DELETE_RECORD = "candor.matcher.v1.delete_record"
MATCH_GALLERY = "candor.matcher.v1.gallery"
AUDIT_VERIFY = "candor.audit.v1.verify"
AUDIT_QUERY = "candor.audit.v1.query"

#: The JetStream stream of audit events, its subjects, its durable consumer and its dead letters.
AUDIT_STREAM = "CANDOR_AUDIT"
AUDIT_EVENT_PREFIX = "candor.audit.v1.event"
AUDIT_CONSUMER = "audit-chain-writer"
AUDIT_DEAD_LETTER = "candor.dlq.audit"
#: Signed checkpoints of the chain's head, for outside parties to keep.
AUDIT_CHECKPOINT = "candor.audit.v1.checkpoint"

#: Bulk enrolment: the work-queue stream between the import workers, each photo's result, the
#: dead letters, and the bucket of import records (see candor_kit.ingest).
INGEST_STREAM = "CANDOR_INGEST"
INGEST_WORK_PREFIX = "candor.ingest.v1.work"
INGEST_RESULTS_STREAM = "CANDOR_IMPORT_RESULTS"
INGEST_RESULT_PREFIX = "candor.ingest.v1.result"
INGEST_DEAD_STREAM = "CANDOR_INGEST_DEAD"
INGEST_DEAD_PREFIX = "candor.dlq.ingest"
IMPORTS_BUCKET = "CANDOR_IMPORTS"
#: When each expunged subject and record was expunged, so queued import work cannot bring it back.
TOMBSTONES_BUCKET = "CANDOR_GALLERY_TOMBSTONES"


@dataclass(frozen=True)
class BusRole:
    """What one service does on NATS."""

    #: Request subjects it answers (in a queue group, so replicas share them).
    serves: tuple[str, ...] = ()
    #: Request subjects it calls.
    calls: tuple[str, ...] = ()
    #: Whether it publishes audit events (and may create the audit stream).
    audits: bool = False
    #: Whether it consumes the audit stream and writes the chain.
    writes_chain: bool = False
    #: The import stage it works (detect, embed or match), pulling from the CANDOR_INGEST stream.
    import_stage: str = ""
    #: The stage it hands each photo on to.
    hands_on_to: str = ""
    #: Whether it runs imports (starts them, queues photos, reads their results).
    runs_imports: bool = False
    #: Whether it keeps the tombstones of expunged subjects and records.
    keeps_tombstones: bool = False


ROLES: dict[str, BusRole] = {
    "detector": BusRole(serves=(DETECT,), audits=True, import_stage="detect", hands_on_to="embed"),
    "embedder": BusRole(serves=(EMBED, EMBED_MODEL), audits=True, import_stage="embed", hands_on_to="match"),
    "matcher": BusRole(
        serves=(MATCH_ENROLL, MATCH_SEARCH, MATCH_DELETE_SUBJECT, MATCH_DELETE_RECORD, MATCH_GALLERY),
        audits=True,
        import_stage="match",
        keeps_tombstones=True,
    ),
    "audit": BusRole(serves=(AUDIT_VERIFY, AUDIT_QUERY), writes_chain=True),
    "gateway": BusRole(
        calls=(
            DETECT,
            EMBED,
            MATCH_ENROLL,
            MATCH_SEARCH,
            MATCH_DELETE_SUBJECT,
            MATCH_DELETE_RECORD,
            AUDIT_VERIFY,
            AUDIT_QUERY,
        ),
        audits=True,
        runs_imports=True,
        hands_on_to="detect",
    ),
}


def inbox_prefix(service: str) -> str:
    """The reply-inbox prefix a service uses, so its permissions can name its own inboxes only."""
    return f"_INBOX_{service}"


def _bucket_permissions(bucket: str) -> list[str]:
    """Create, read and write one key-value bucket."""
    stream = f"KV_{bucket}"
    return [
        f"$JS.API.STREAM.CREATE.{stream}",
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$KV.{bucket}.>",
    ]


def nats_permissions(service: str) -> dict[str, list[str]]:
    """The least NATS permissions ``service`` needs: subjects it may publish to and subscribe to.

    Replies to requests it serves go out through ``allow_responses``, so they need no entry.
    """
    role = ROLES[service]
    stream_api = [f"$JS.API.STREAM.{verb}.{AUDIT_STREAM}" for verb in ("CREATE", "INFO")]
    publish = list(role.calls)
    subscribe = list(role.serves)
    if role.calls or role.audits or role.writes_chain or role.import_stage:
        subscribe.append(f"{inbox_prefix(service)}.>")
    if role.import_stage or role.runs_imports:
        publish += [
            f"$JS.API.STREAM.{verb}.{stream}"
            for verb in ("CREATE", "INFO")
            for stream in (INGEST_STREAM, INGEST_RESULTS_STREAM, INGEST_DEAD_STREAM)
        ]
        publish.append(f"{INGEST_RESULT_PREFIX}.>")
    if role.hands_on_to:
        publish.append(f"{INGEST_WORK_PREFIX}.{role.hands_on_to}")
    if role.import_stage:
        consumer = f"ingest-{role.import_stage}"
        publish += [
            f"$JS.API.CONSUMER.CREATE.{INGEST_STREAM}.{consumer}.{INGEST_WORK_PREFIX}.{role.import_stage}",
            f"$JS.API.CONSUMER.INFO.{INGEST_STREAM}.{consumer}",
            f"$JS.API.CONSUMER.MSG.NEXT.{INGEST_STREAM}.{consumer}",
            f"$JS.ACK.{INGEST_STREAM}.{consumer}.>",
            f"{INGEST_DEAD_PREFIX}.{role.import_stage}",
        ]
    if role.keeps_tombstones:
        publish += _bucket_permissions(TOMBSTONES_BUCKET)
    if role.runs_imports:
        publish += [
            *_bucket_permissions(IMPORTS_BUCKET),
            f"$JS.API.CONSUMER.CREATE.{INGEST_RESULTS_STREAM}.>",
            f"$JS.API.CONSUMER.INFO.{INGEST_RESULTS_STREAM}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{INGEST_RESULTS_STREAM}.>",
            f"$JS.API.STREAM.MSG.GET.{INGEST_RESULTS_STREAM}",
            # Items whose deliveries ran out: read, dead-letter, delete.
            f"$JS.API.STREAM.MSG.GET.{INGEST_STREAM}",
            f"$JS.API.STREAM.MSG.DELETE.{INGEST_STREAM}",
            f"{INGEST_DEAD_PREFIX}.>",
        ]
        subscribe.append(f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{INGEST_STREAM}.>")
    if role.audits:
        publish += [f"{AUDIT_EVENT_PREFIX}.>", *stream_api]
    if role.writes_chain:
        publish += [
            *stream_api,
            f"$JS.API.CONSUMER.CREATE.{AUDIT_STREAM}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{AUDIT_STREAM}.{AUDIT_CONSUMER}",
            f"$JS.API.CONSUMER.INFO.{AUDIT_STREAM}.{AUDIT_CONSUMER}",
            f"$JS.API.CONSUMER.MSG.NEXT.{AUDIT_STREAM}.{AUDIT_CONSUMER}",
            f"$JS.ACK.{AUDIT_STREAM}.{AUDIT_CONSUMER}.>",
            AUDIT_DEAD_LETTER,
            AUDIT_CHECKPOINT,
        ]
    return {"publish": sorted(set(publish)), "subscribe": sorted(set(subscribe))}
