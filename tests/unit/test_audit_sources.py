"""Each audit event enters the chain only from the service that owns its kind."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

from candor_kit import subjects
from candor_kit.audit_events import AuditPublisher, audit_message_id
from candor_kit.bus import message_key

GATEWAY = Path(__file__).resolve().parents[2] / "services" / "gateway" / "candor_gateway"


FAILED = "candor.audit.v1.event.{}.gallery.import_item_failed"


@pytest.mark.parametrize(
    ("subject", "kind", "problem"),
    [
        ("candor.audit.v1.event.gateway.review.submitted", "review.submitted", None),
        ("candor.audit.v1.event.matcher.gallery.import_enrolled", "gallery.import_enrolled", None),
        # An enrolment over gRPC is the gateway's to record; the matcher names an import's photos.
        ("candor.audit.v1.event.matcher.enroll.completed", "enroll.completed", "does not own"),
        ("candor.audit.v1.event.operator.model.calibrated", "model.calibrated", None),
        ("candor.audit.v1.event.detector.review.submitted", "review.submitted", "does not own"),
        ("candor.audit.v1.event.operator.search.completed", "search.completed", "does not own"),
        ("candor.audit.v1.event.gateway.search.completed", "review.submitted", "not the one its subject names"),
        ("candor.audit.v1.event.review.submitted", "review.submitted", "names no service"),
        ("candor.audit.v1.event.audit.review.submitted", "review.submitted", "names no service"),
        ("candor.elsewhere.gateway.review.submitted", "review.submitted", "names no service"),
    ],
)
def test_an_audit_event_enters_the_chain_only_from_the_service_that_owns_its_kind(
    subject: str, kind: str, problem: str | None
) -> None:
    found = subjects.audit_publisher_problem(subject, kind, "an-event-id")
    assert found is None if problem is None else problem in (found or "")


@pytest.mark.parametrize(
    ("source", "event_id", "problem"),
    [
        ("detector", "import-1.7.failed.detect", None),
        ("embedder", "dead.12.embed", None),
        ("matcher", "import-1.7.failed.match", None),
        # The gateway records any stage's work whose deliveries ran out.
        ("gateway", "import-1.7.failed.match", None),
        # One stage taking another's id first would have that stage's own failure dropped.
        ("detector", "import-1.7.failed.match", "only its own stage's"),
        ("embedder", "dead.12.detect", "only its own stage's"),
        ("matcher", "import-1.7.failed", "names no import stage"),
        ("detector", "", "names no import stage"),
    ],
)
def test_a_kind_several_services_write_takes_from_each_only_its_own_stages_events(
    source: str, event_id: str, problem: str | None
) -> None:
    kind = "gallery.import_item_failed"
    found = subjects.audit_publisher_problem(FAILED.format(source), kind, event_id)
    assert found is None if problem is None else problem in (found or "")


def test_every_kind_several_services_write_is_stage_scoped() -> None:
    writers: dict[str, set[str]] = {}
    patterns = {pattern for role in subjects.ROLES.values() for pattern in role.audit_kinds}
    for source, role in subjects.ROLES.items():
        for pattern in role.audit_kinds:
            # Two patterns overlap when either matches the other (``review.*`` and ``review.x``).
            for other in patterns:
                if fnmatch.fnmatchcase(other, pattern) or fnmatch.fnmatchcase(pattern, other):
                    writers.setdefault(other, set()).add(source)
    shared = {kind for kind, sources in writers.items() if len(sources) > 1}
    assert shared == set(subjects.STAGE_SCOPED_KINDS)


def test_every_service_publishes_audit_events_under_its_own_name() -> None:
    assert subjects.audit_subject("gateway", "search.completed") == "candor.audit.v1.event.gateway.search.completed"
    with pytest.raises(ValueError, match="not a service that writes audit events"):
        AuditPublisher(None, "audit")  # type: ignore[arg-type]


#: Where the gateway names the kinds it audits: published kinds, and actions whose refusals it audits.
_GATEWAY_KINDS = re.compile(r'publish\(\s*"([a-z_.]+)"|(?:SUBMITTED|SEARCHED|ANALYSED|SEEDED|SCORED) = "([a-z_.]+)"')
_GATEWAY_ACTIONS = re.compile(
    r'(?:_principal|_audited_call)\(context, "([a-z_.]+)"|(?:audit_refusal|_refused)\(\s*"([a-z_.]+)"'
)


def test_every_kind_the_gateway_audits_is_one_it_owns() -> None:
    sources = "".join(path.read_text() for path in GATEWAY.glob("*.py"))
    kinds = {a or b for a, b in _GATEWAY_KINDS.findall(sources)}
    kinds |= {f"{a or b}.refused" for a, b in _GATEWAY_ACTIONS.findall(sources)}
    assert {"search.completed", "config.loaded", "gallery.models.refused", "review.submitted"} <= kinds
    topic = "candor.audit.v1.event.gateway."
    unowned = sorted(kind for kind in kinds if subjects.audit_publisher_problem(topic + kind, kind, "1.match"))
    assert unowned == []


def test_a_services_stream_message_ids_are_keyed_by_its_own_login() -> None:
    gateway, matcher = message_key(b"the gateway's password"), message_key(b"the matcher's password")
    analysis = ("review.analysed", "search-1/analysis/rita")
    # Every replica of one service logs in alike, so a retried or repeated event is stored once...
    assert audit_message_id(gateway, *analysis) == audit_message_id(message_key(b"the gateway's password"), *analysis)
    # ...and no other service's user can make the id, nor one from no key at all.
    assert audit_message_id(gateway, *analysis) not in {
        audit_message_id(matcher, *analysis),
        audit_message_id(b"", *analysis),
        analysis[1],
    }
    assert audit_message_id(gateway, "search.completed", analysis[1]) != audit_message_id(gateway, *analysis)
    assert message_key(b"") == b""
