"""The NATS subjects of the architecture, who serves and who calls each, declared once.

Services import their subjects from here; the NATS permissions in ``deploy/`` are checked against
``nats_permissions`` so a deployment grants each service exactly what this table says it uses.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass

from candor_client.events import EVENTS_PREFIX, EVENTS_STREAM
from candor_kit.errors import ConfigError

DETECT = "candor.detector.v1.detect"
EMBED = "candor.embedder.v1.embed"
EMBED_MODEL = "candor.embedder.v1.model"
MATCH_ENROLL = "candor.matcher.v1.enroll"
MATCH_SEARCH = "candor.matcher.v1.search"
MATCH_DELETE_SUBJECT = "candor.matcher.v1.delete_subject"
MATCH_DELETE_RECORD = "candor.matcher.v1.delete_record"
MATCH_GALLERY = "candor.matcher.v1.gallery"
MATCH_BEGIN_REEMBED = "candor.matcher.v1.begin_reembed"
MATCH_LIST_MISSING = "candor.matcher.v1.list_missing"
MATCH_SWITCH_MODEL = "candor.matcher.v1.switch_model"
AUDIT_VERIFY = "candor.audit.v1.verify"
AUDIT_QUERY = "candor.audit.v1.query"

#: The JetStream stream of audit events, its subjects, its durable consumer and its dead letters.
AUDIT_STREAM = "CANDOR_AUDIT"
AUDIT_EVENT_PREFIX = "candor.audit.v1.event"
AUDIT_CONSUMER = "audit-chain-writer"
AUDIT_DEAD_LETTER = "candor.dlq.audit"
#: Signed checkpoints of the chain's head, for outside parties to keep; the stream that keeps them
#: outside the chain's database, so a cut tail is caught even when its checkpoints went with it.
AUDIT_CHECKPOINT = "candor.audit.v1.checkpoint"
AUDIT_CHECKPOINT_STREAM = "CANDOR_AUDIT_CHECKPOINTS"

#: Bulk enrolment: a work-queue stream for each stage of the import workers (so a stage's NATS user
#: can reach no other stage's work), each photo's result, the dead letters, the bucket of import
#: records and the gateway's register of the items it queued (see candor_kit.ingest).
INGEST_STAGES = ("detect", "embed", "match")
INGEST_WORK_PREFIX = "candor.ingest.v1.work"
INGEST_RESULTS_STREAM = "CANDOR_IMPORT_RESULTS"
INGEST_RESULT_PREFIX = "candor.ingest.v1.result"
#: Who stores a photo's result, in the order a photo passes them: the gateway (a photo it refuses),
#: then each stage. Each stores on a subject of its own (``<prefix>.<import>.<item>.<source>``),
#: which no other service's user may publish to.
INGEST_RESULT_SOURCES = ("gateway", *INGEST_STAGES)
INGEST_DEAD_STREAM = "CANDOR_INGEST_DEAD"
INGEST_DEAD_PREFIX = "candor.dlq.ingest"
#: JetStream's announcement of a work item whose deliveries ran out (``.<stream>.<consumer>``).
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
#: Where those announcements for the import streams are kept until the gateway settles the item:
#: the server announces each once, and a gateway down at that moment must still hear of it.
INGEST_ADVISORIES_STREAM = "CANDOR_INGEST_ADVISORIES"
#: The gateways' one durable consumer of it (each announcement to one replica).
INGEST_ADVISORIES_CONSUMER = "gateway-advisories"
IMPORTS_BUCKET = "CANDOR_IMPORTS"
#: Each queued item's digest, by ``<import id>.<item>``: written by the gateway alone, read by the
#: matcher, which enrols only the items the gateway queued, unchanged.
IMPORT_ITEMS_BUCKET = "CANDOR_IMPORT_ITEMS"
#: When each expunged subject and record was expunged, so queued import work cannot bring it back.
TOMBSTONES_BUCKET = "CANDOR_GALLERY_TOMBSTONES"
#: Which model the gallery searches with and which it is being re-embedded into (key "models").
GALLERY_BUCKET = "CANDOR_GALLERY"
#: The tokens revoked by their users' sign-out, by SHA-256, kept until they would have expired
#: (the gateway's alone).
REVOKED_TOKENS_BUCKET = "CANDOR_REVOKED_TOKENS"
#: Each user's searches of a UTC day, counted by every gateway replica together (the daily quota).
SEARCH_COUNTS_BUCKET = "CANDOR_SEARCH_COUNTS"
#: The object store of encrypted gallery photos and retained probes (the gateway's alone).
PHOTOS_BUCKET = "CANDOR_PHOTOS"
#: Each client request id's claim and answer, so a retried call does its work once (the gateway's
#: alone; keys are digests of caller, call and id).
REQUESTS_BUCKET = "CANDOR_REQUESTS"

#: The event feed: lifecycle events (candor.events.v1.LifecycleEvent) for integrations, one subject
#: per kind under the prefix, published by the audit service once each record is in the chain and
#: read by integrations with durable consumers of their own.
# EVENTS_STREAM and EVENTS_PREFIX (imported above) are candor-client's: integrations install it
# without the rest of Candor.
#: Webhook deliveries that ran out of attempts (or that an endpoint refused outright), for
#: operators to read (`candor events dead-letters`).
WEBHOOKS_DEAD_STREAM = "CANDOR_WEBHOOKS_DEAD"
WEBHOOKS_DEAD_PREFIX = "candor.dlq.webhooks"

#: The import stages whose work is routed by model (detection and embedding depend on it; the
#: matcher's enrolment takes every model's vectors).
ROUTED_STAGES = ("detect", "embed")


def ingest_stream(stage: str) -> str:
    """The work-queue stream of one import stage."""
    if stage not in INGEST_STAGES:
        raise ValueError(f"no import stage {stage!r}")
    return f"CANDOR_INGEST_{stage.upper()}"


#: A model id that can name a NATS subject token and a consumer.
LANE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def lane(model_id: str) -> str:
    """The subject token of a model's detectors and embedders: the model id itself, which must be
    1 to 64 of [A-Za-z0-9_-] (a dot would split the subject)."""
    if not LANE.match(model_id):
        raise ConfigError(f"model id {model_id!r} cannot route work: use 1 to 64 of A-Z, a-z, 0-9, _ and -")
    return model_id


def detect_for(model_id: str) -> str:
    """The detectors that cut chips for ``model_id``."""
    return f"{DETECT}.{lane(model_id)}"


def embed_for(model_id: str) -> str:
    """The embedders that run ``model_id``."""
    return f"{EMBED}.{lane(model_id)}"


def embed_model_for(model_id: str) -> str:
    """Where an embedder of ``model_id`` describes its model."""
    return f"{EMBED_MODEL}.{lane(model_id)}"


@dataclass(frozen=True)
class BusRole:
    """What one service does on NATS."""

    #: Request subjects it answers (in a queue group, so replicas share them).
    serves: tuple[str, ...] = ()
    #: Request subjects it calls.
    calls: tuple[str, ...] = ()
    #: The audit event kinds it may write (shell patterns). It publishes them under its own name,
    #: ``candor.audit.v1.event.<service>.<kind>``, which its NATS user alone may publish to, and the
    #: audit service refuses any kind the publishing service does not own.
    audit_kinds: tuple[str, ...] = ()
    #: Whether it consumes the audit stream and writes the chain.
    writes_chain: bool = False
    #: The import stage it works (detect, embed or match), pulling from that stage's own stream.
    import_stage: str = ""
    #: The stage it hands each photo on to.
    hands_on_to: str = ""
    #: Whether it runs imports (starts them, queues photos, reads their results).
    runs_imports: bool = False
    #: Whether it keeps the register of revoked tokens (the gateway, which checks every call).
    revokes_tokens: bool = False
    #: Whether it keeps the register of client request ids (the gateway: idempotent calls).
    remembers_requests: bool = False
    #: Whether it counts each user's searches of the day with the other replicas (the gateway).
    counts_searches: bool = False
    #: Whether it publishes the event feed (the audit service, from the chain).
    publishes_events: bool = False
    #: Whether it follows the event feed: an integration's user, which may make, read and delete
    #: durable consumers of the feed's stream and nothing else.
    follows_events: bool = False
    #: Whether it relays the feed to webhooks (and dead-letters what cannot be delivered).
    relays_webhooks: bool = False
    #: Whether it keeps the tombstones of expunged subjects and records.
    keeps_tombstones: bool = False
    #: Whether it writes the gallery's model pointer (the matcher), or only reads it.
    gallery_models: str = ""
    #: Whether it may read the dead-lettered import work (an operator looking into failures).
    reads_dead_letters: bool = False
    #: Whether it keeps the encrypted photo store (gallery photos and retained probes).
    keeps_photos: bool = False


#: Dead-lettered import work is audited by the stage that gave up on it (or by the gateway, when
#: the work's deliveries ran out without the stage settling it).
_IMPORT_ITEM_FAILED = "gallery.import_item_failed"

#: The kinds several services write, each event recording one import stage's work: its id ends in
#: ``.<stage>``, and only that stage's service, or the gateway that runs imports, may write it. The
#: chain knows an event by its kind and id, so without this a stage could take the id of another
#: stage's failure first and have that stage's own record dropped as a repeat.
STAGE_SCOPED_KINDS = frozenset({_IMPORT_ITEM_FAILED})

ROLES: dict[str, BusRole] = {
    "detector": BusRole(
        serves=(DETECT, f"{DETECT}.*"), audit_kinds=(_IMPORT_ITEM_FAILED,), import_stage="detect", hands_on_to="embed"
    ),
    "embedder": BusRole(
        serves=(EMBED, f"{EMBED}.*", EMBED_MODEL, f"{EMBED_MODEL}.*"),
        audit_kinds=(_IMPORT_ITEM_FAILED,),
        import_stage="embed",
        hands_on_to="match",
    ),
    "matcher": BusRole(
        serves=(
            MATCH_ENROLL,
            MATCH_SEARCH,
            MATCH_DELETE_SUBJECT,
            MATCH_DELETE_RECORD,
            MATCH_GALLERY,
            MATCH_BEGIN_REEMBED,
            MATCH_LIST_MISSING,
            MATCH_SWITCH_MODEL,
        ),
        audit_kinds=("gallery.import_enrolled", _IMPORT_ITEM_FAILED, "matcher.*"),
        import_stage="match",
        keeps_tombstones=True,
        gallery_models="write",
    ),
    "audit": BusRole(serves=(AUDIT_VERIFY, AUDIT_QUERY), writes_chain=True, publishes_events=True),
    "gateway": BusRole(
        calls=(
            DETECT,
            f"{DETECT}.*",
            EMBED,
            f"{EMBED}.*",
            EMBED_MODEL,
            f"{EMBED_MODEL}.*",
            MATCH_ENROLL,
            MATCH_SEARCH,
            MATCH_DELETE_SUBJECT,
            MATCH_DELETE_RECORD,
            MATCH_BEGIN_REEMBED,
            MATCH_LIST_MISSING,
            MATCH_SWITCH_MODEL,
            AUDIT_VERIFY,
            AUDIT_QUERY,
        ),
        # Every use of the public API: searches, enrolments, reviews, deletions, exports, imports,
        # re-embeddings and their refusals, the policy in force, probe retention.
        audit_kinds=(
            "search.*",
            "enroll.*",
            "detect.*",
            "delete.*",
            "delete_record.*",
            "subject.deleted",
            "record.deleted",
            "review.*",
            # Supervisors' known-answer tests of reviewers, and their scores.
            "proficiency.*",
            "verify_audit.*",
            "export_case.*",
            "list_audit.*",
            "audit.verified",
            "audit.listed",
            "case.exported",
            "policy.*",
            "config.loaded",
            "gallery.models.refused",
            "probe.deleted",
            "photo.*",
            "case.view*",
            "session.end*",
            # A service account's first call of a day (which actors are machines, for oversight).
            "service_account.used",
            # Each calibration searches run under, with its figures, before the first of them.
            "calibration.in_use",
            "import.*",
            "reembed.*",
            "gallery.import_started",
            "gallery.import_finished",
            "gallery.reembed_started",
            "gallery.model_switched",
            # Import work whose deliveries ran out, which the gateway hears of by advisory.
            _IMPORT_ITEM_FAILED,
        ),
        runs_imports=True,
        hands_on_to="detect",
        gallery_models="read",
        keeps_photos=True,
        revokes_tokens=True,
        remembers_requests=True,
        counts_searches=True,
    ),
    # An integration (a case-management or booking system) following the event feed: it reads the
    # feed with durable consumers of its own and can reach nothing else on the bus.
    "integration": BusRole(follows_events=True),
    # The webhook relay (`candor events relay`): the feed to HTTPS endpoints, for systems that
    # cannot speak NATS; it follows the feed and writes its dead letters, nothing else.
    "webhooks": BusRole(follows_events=True, relays_webhooks=True),
    # A person at the command line (`candor eval`, `candor model calibrate`): calls the detector
    # and embedder, counts the gallery's records, reads dead-lettered import work, and records a
    # calibration. Never a search, an enrolment, a deletion or the audit log.
    "operator": BusRole(
        calls=(DETECT, f"{DETECT}.*", EMBED, f"{EMBED}.*", EMBED_MODEL, f"{EMBED_MODEL}.*", MATCH_GALLERY),
        audit_kinds=("model.calibrated",),
        reads_dead_letters=True,
    ),
}


def audit_subject(source: str, kind: str) -> str:
    """The subject ``source`` publishes an audit event of ``kind`` on."""
    return f"{AUDIT_EVENT_PREFIX}.{source}.{kind}"


def audit_publisher_problem(subject: str, kind: str, event_id: str) -> str | None:
    """Why an audit event of ``kind`` with ``event_id`` that arrived on ``subject`` must not enter
    the chain, or None.

    The subject names its publisher (NATS lets each service's user publish under its own name
    only); the event's kind must be the subject's and one its publisher owns; an event of a kind
    several services write (``STAGE_SCOPED_KINDS``) must record its publisher's own stage.
    """
    prefix = AUDIT_EVENT_PREFIX + "."
    source, _, subject_kind = subject.removeprefix(prefix).partition(".")
    if not subject.startswith(prefix) or source not in ROLES or not ROLES[source].audit_kinds:
        return "the subject names no service that writes audit events"
    if subject_kind != kind:
        return "the event's kind is not the one its subject names"
    if not any(fnmatch.fnmatchcase(kind, pattern) for pattern in ROLES[source].audit_kinds):
        return f"{source} does not own audit events of this kind"
    if kind in STAGE_SCOPED_KINDS:
        return _stage_problem(source, event_id)
    return None


def stage_event_id(stage: str, *parts: object) -> str:
    """The id of an event of a ``STAGE_SCOPED_KINDS`` kind about ``stage``'s work, named by ``parts``."""
    return ".".join((*map(str, parts), stage))


def _stage_problem(source: str, event_id: str) -> str | None:
    """Why ``source`` may not write the stage-scoped event ``event_id``, or None."""
    stage = event_id.rpartition(".")[2]
    if stage not in INGEST_STAGES:
        return "the event's id names no import stage (it must end in .detect, .embed or .match)"
    role = ROLES[source]
    if not role.runs_imports and role.import_stage != stage:
        return f"{source} may record only its own stage's import work, not the {stage} stage's"
    return None


def inbox_prefix(service: str) -> str:
    """The reply-inbox prefix a service uses, so its permissions can name its own inboxes only."""
    return f"_INBOX_{service}"


def _bucket_permissions(bucket: str, write: bool = True, watch: bool = False) -> list[str]:
    """Read one key-value bucket; with ``write``, also create it and write to it; with ``watch``,
    follow its keys (the ordered consumer a key-value watch makes, delivered to the service's own
    inbox)."""
    stream = f"KV_{bucket}"
    read = [f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.STREAM.MSG.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}.>"]
    if watch:
        read += [
            f"$JS.API.CONSUMER.CREATE.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.DELETE.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.>",
        ]
    if not write:
        return read
    return [f"$JS.API.STREAM.CREATE.{stream}", *read, f"$KV.{bucket}.>"]


def _object_store_permissions(bucket: str) -> list[str]:
    """Create, write, read, list and delete the objects of one object store: its stream's API,
    the short-lived ordered consumers that read an object's chunks, and its subjects."""
    stream = f"OBJ_{bucket}"
    return [
        *(f"$JS.API.STREAM.{verb}.{stream}" for verb in ("CREATE", "INFO", "MSG.GET", "PURGE")),
        # nats-py finds the stream behind an object's subjects by name lookup before reading it.
        "$JS.API.STREAM.NAMES",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$O.{bucket}.>",
    ]


def _stage_consumer_permissions(stage: str) -> list[str]:
    """Pull one import stage's work: ``ingest-match``, or ``ingest-<stage>-<lane>`` for a stage
    routed by model. A lane's consumer name is one token, so its grants name any consumer of the
    stream, while creating one is limited to the stage's own work subjects."""
    stream = ingest_stream(stage)
    if stage in ROUTED_STAGES:
        # A lane's consumer is one token, so grants name any consumer of the stage's own stream.
        consumer, work = "*", f"{INGEST_WORK_PREFIX}.{stage}.*"
    else:
        consumer, work = f"ingest-{stage}", f"{INGEST_WORK_PREFIX}.{stage}"
    return [
        f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}.{work}",
        f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        f"$JS.ACK.{stream}.{consumer}.>",
        f"{INGEST_DEAD_PREFIX}.{stage}",
    ]


def nats_permissions(service: str) -> dict[str, list[str]]:
    """The least NATS permissions ``service`` needs: subjects it may publish to and subscribe to,
    and under ``publish_denied`` those a wildcard of ``publish`` covers that it may not.

    Replies to requests it serves go out through ``allow_responses``, so they need no entry.
    """
    role = ROLES[service]
    stream_api = [f"$JS.API.STREAM.{verb}.{AUDIT_STREAM}" for verb in ("CREATE", "INFO")]
    publish = list(role.calls)
    subscribe = list(role.serves)
    if role.calls or role.audit_kinds or role.writes_chain or role.import_stage or role.follows_events:
        subscribe.append(f"{inbox_prefix(service)}.>")
    if role.import_stage or role.runs_imports:
        publish += [
            f"$JS.API.STREAM.{verb}.{stream}"
            for verb in ("CREATE", "INFO")
            for stream in (*map(ingest_stream, INGEST_STAGES), INGEST_RESULTS_STREAM, INGEST_DEAD_STREAM)
        ]
        # Its own results only: the gateway's refusals, or one stage's (candor_kit.ingest).
        source = role.import_stage or "gateway"
        publish.append(f"{INGEST_RESULT_PREFIX}.*.*.{source}")
    if role.hands_on_to:
        # Detect and embed work is routed by model (a lane); match work is not.
        publish.append(f"{INGEST_WORK_PREFIX}.{role.hands_on_to}" + (".*" if role.hands_on_to in ROUTED_STAGES else ""))
    if role.import_stage:
        publish += _stage_consumer_permissions(role.import_stage)
    if role.keeps_tombstones:
        publish += _bucket_permissions(TOMBSTONES_BUCKET)
    if role.import_stage == "match":
        # Reads the gateway's register, and claims an item in it before enrolling it.
        publish += [*_bucket_permissions(IMPORT_ITEMS_BUCKET, write=False), f"$KV.{IMPORT_ITEMS_BUCKET}.>"]
    if role.gallery_models:
        # Searches read the record from memory, kept by a watch (candor_kit.gallery_models).
        publish += _bucket_permissions(GALLERY_BUCKET, write=role.gallery_models == "write", watch=True)
    if role.runs_imports:
        publish += [
            # Listing the import records (the sweep's unfinished imports) is a key-value watch.
            *_bucket_permissions(IMPORTS_BUCKET, watch=True),
            f"$JS.API.CONSUMER.CREATE.{INGEST_RESULTS_STREAM}.>",
            # Each status read's consumer is deleted when the read ends (candor_kit.bus.one_read_consumer).
            f"$JS.API.CONSUMER.DELETE.{INGEST_RESULTS_STREAM}.*",
            f"$JS.API.CONSUMER.INFO.{INGEST_RESULTS_STREAM}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{INGEST_RESULTS_STREAM}.>",
            f"$JS.API.STREAM.MSG.GET.{INGEST_RESULTS_STREAM}",
            # Items whose deliveries ran out: their kept announcements, then the item itself is
            # read, dead-lettered and deleted.
            *(f"$JS.API.STREAM.{verb}.{INGEST_ADVISORIES_STREAM}" for verb in ("CREATE", "INFO")),
            *(
                f"$JS.API.CONSUMER.{verb}.{INGEST_ADVISORIES_STREAM}.{INGEST_ADVISORIES_CONSUMER}"
                for verb in ("CREATE", "INFO", "MSG.NEXT")
            ),
            f"$JS.ACK.{INGEST_ADVISORIES_STREAM}.{INGEST_ADVISORIES_CONSUMER}.>",
            *(f"$JS.API.STREAM.{verb}.{ingest_stream(s)}" for verb in ("MSG.GET", "MSG.DELETE") for s in INGEST_STAGES),
            f"{INGEST_DEAD_PREFIX}.>",
            *_bucket_permissions(IMPORT_ITEMS_BUCKET),
        ]
    if role.keeps_photos:
        publish += _object_store_permissions(PHOTOS_BUCKET)
    if role.revokes_tokens:
        publish += _bucket_permissions(REVOKED_TOKENS_BUCKET)
    if role.counts_searches:
        publish += _bucket_permissions(SEARCH_COUNTS_BUCKET)
    if role.remembers_requests:
        publish += _bucket_permissions(REQUESTS_BUCKET)
    if role.audit_kinds:
        publish += [f"{AUDIT_EVENT_PREFIX}.{service}.>", *stream_api]
    if role.reads_dead_letters:
        publish += [
            f"$JS.API.STREAM.{verb}.{stream}"
            for verb in ("INFO", "MSG.GET")
            for stream in (INGEST_DEAD_STREAM, WEBHOOKS_DEAD_STREAM)
        ]
    if role.writes_chain:
        publish += [
            *stream_api,
            f"$JS.API.CONSUMER.CREATE.{AUDIT_STREAM}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{AUDIT_STREAM}.{AUDIT_CONSUMER}",
            f"$JS.API.CONSUMER.INFO.{AUDIT_STREAM}.{AUDIT_CONSUMER}",
            # Its own durable consumer, and the short-lived ones that read both streams whole
            # (every event on the stream must be in the chain; checkpoints never go backwards).
            f"$JS.API.CONSUMER.MSG.NEXT.{AUDIT_STREAM}.*",
            f"$JS.ACK.{AUDIT_STREAM}.{AUDIT_CONSUMER}.>",
            # The short-lived ones are deleted when their read ends (candor_kit.bus.read_stream).
            f"$JS.API.CONSUMER.DELETE.{AUDIT_STREAM}.*",
            f"$JS.API.CONSUMER.DELETE.{AUDIT_CHECKPOINT_STREAM}.*",
            AUDIT_DEAD_LETTER,
            AUDIT_CHECKPOINT,
            *(f"$JS.API.STREAM.{verb}.{AUDIT_CHECKPOINT_STREAM}" for verb in ("CREATE", "INFO", "MSG.GET")),
            f"$JS.API.CONSUMER.CREATE.{AUDIT_CHECKPOINT_STREAM}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{AUDIT_CHECKPOINT_STREAM}.*",
        ]
    if role.publishes_events:
        publish += [
            f"{EVENTS_PREFIX}.>",
            *(f"$JS.API.STREAM.{verb}.{EVENTS_STREAM}" for verb in ("CREATE", "INFO", "MSG.GET")),
            # The followers' lag, for the feed's metrics.
            f"$JS.API.CONSUMER.LIST.{EVENTS_STREAM}",
        ]
    if role.relays_webhooks:
        publish += [
            f"{WEBHOOKS_DEAD_PREFIX}.>",
            *(f"$JS.API.STREAM.{verb}.{WEBHOOKS_DEAD_STREAM}" for verb in ("CREATE", "INFO")),
        ]
    if role.follows_events:
        publish += [
            f"$JS.API.STREAM.INFO.{EVENTS_STREAM}",
            f"$JS.API.CONSUMER.CREATE.{EVENTS_STREAM}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{EVENTS_STREAM}.*",
            *(f"$JS.API.CONSUMER.{verb}.{EVENTS_STREAM}.*" for verb in ("INFO", "DELETE", "MSG.NEXT")),
            f"$JS.ACK.{EVENTS_STREAM}.>",
        ]
    # The short-lived readers' consumers are deleted by name; the chain's own consumer is not
    # among them (made again it would start from wherever it is told, not where it was).
    denied = [f"$JS.API.CONSUMER.DELETE.{AUDIT_STREAM}.{AUDIT_CONSUMER}"] if role.writes_chain else []
    return {"publish": sorted(set(publish)), "publish_denied": denied, "subscribe": sorted(set(subscribe))}


def nats_authorization() -> str:
    """nats-server's ``authorization`` block: one user per role of ROLES with exactly the
    permissions of ``nats_permissions``, each password read from the server's environment
    (``NATS_PASSWORD_<ROLE>``), so the file holds no secret."""
    lines = ["authorization {", "  users: ["]
    for service in ROLES:
        granted = nats_permissions(service)
        publish = f"allow: {json.dumps(granted['publish'])}" if granted["publish"] else 'deny: [">"]'
        if granted["publish_denied"]:
            publish += f", deny: {json.dumps(granted['publish_denied'])}"
        lines += [
            f"    {{user: {service}, password: ${password_variable(service)}, permissions: {{",
            f"      publish: {{{publish}}}",
            f"      subscribe: {{allow: {json.dumps(granted['subscribe'])}}}",
            "      allow_responses: true",
            "    }}",
        ]
    return "\n".join([*lines, "  ]", "}", ""])


def password_variable(service: str) -> str:
    """The nats-server environment variable that holds ``service``'s NATS password."""
    return f"NATS_PASSWORD_{service.upper()}"
