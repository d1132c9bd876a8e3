"""Fuzz every gRPC request message of every service, and the audit stream's event, with atheris.

Each input picks a message type, is parsed as that message, and the parsed message goes through
the checks its service makes before any I/O (policy, identifiers, origins, review decisions, the
audit event's publisher check, the refusal record's bounding, the export page). Parsing may fail
with DecodeError and a check with a CandorError; any other exception is a finding.

    .venv/bin/python fuzz/grpc_requests.py -atheris_runs=N [-max_total_time=S]
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Callable
from typing import Any

import atheris
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

#: Smoke runs (the tests) instrument only Candor's own modules; campaigns instrument everything.
SMOKE = os.environ.get("CANDOR_FUZZ_SMOKE") == "1"
CANDOR = ["candor", "candor_audit", "candor_gateway", "candor_kit", "candor_matcher"]
with atheris.instrument_imports(include=CANDOR) if SMOKE else contextlib.nullcontext():
    from candor.audit.v1 import audit_pb2
    from candor.common.v1 import common_pb2
    from candor.detector.v1 import detector_pb2
    from candor.embedder.v1 import embedder_pb2
    from candor.gateway.v1 import gateway_pb2
    from candor.matcher.v1 import matcher_pb2
    from candor_audit.answers import query_entry
    from candor_cli.case_export import export_file_stem, render_html
    from candor_gateway.refusals import describe_malformed
    from candor_gateway.reviews import review_decision
    from candor_kit import subjects
    from candor_kit.audit_records import entry_from_event, refused_entry
    from candor_kit.errors import CandorError
    from candor_kit.identifiers import check_subject_id
    from candor_kit.policy import DEFAULT_POLICY_YAML, parse_policy
    from candor_matcher.service import check_origin

POLICY = parse_policy(DEFAULT_POLICY_YAML.encode())
NOW = "2026-12-01T00:00:00.000000Z"


def _search(request: gateway_pb2.SearchRequest) -> None:
    describe_malformed(request.case_number)
    POLICY.check_search(
        request.case_number, request.purpose, request.authorisation_reference.strip(), request.max_candidates
    )


def _export(request: gateway_pb2.ExportCaseRequest) -> None:
    export_file_stem(request.case_number)
    render_html(gateway_pb2.ExportCaseResponse(case_number=request.case_number), [])


def _event(event: audit_pb2.AuditEvent) -> None:
    subject = subjects.audit_subject("gateway", event.kind)
    if subjects.audit_publisher_problem(subject, event.kind, event.event_id) is None:
        entry_from_event(event)
    refused_entry(subject, event, "fuzz", NOW)
    render_html(gateway_pb2.ExportCaseResponse(records=[audit_pb2.AuditRecord(event=event)]), [])


def _with_origin(check: Callable[[Any], None] | None = None) -> Callable[[Any], None]:
    def run(request: Any) -> None:
        check_origin(request.origin)
        if check is not None:
            check(request)

    return run


#: Each request message type and the checks its service makes before any I/O.
TARGETS: list[tuple[type[Message], Callable[[Any], None]]] = [
    (gateway_pb2.SearchRequest, _search),
    (gateway_pb2.EnrollRequest, lambda r: check_subject_id(r.subject_id)),
    (gateway_pb2.SubmitReviewRequest, review_decision),
    (gateway_pb2.ExportCaseRequest, _export),
    (gateway_pb2.DeleteSubjectRequest, lambda r: check_subject_id(r.subject_id)),
    (matcher_pb2.SearchRequest, _with_origin()),
    (matcher_pb2.EnrollRequest, _with_origin(lambda r: check_subject_id(r.subject_id))),
    (matcher_pb2.DeleteSubjectRequest, _with_origin(lambda r: check_subject_id(r.subject_id))),
    (matcher_pb2.DeleteRecordRequest, _with_origin()),
    (matcher_pb2.SwitchModelRequest, _with_origin()),
    (audit_pb2.QueryRequest, lambda r: query_entry(r, NOW)),
    (audit_pb2.AuditEvent, _event),
]
#: Every other request message of every service's API: parsed and written back out only.
for module in (gateway_pb2, matcher_pb2, detector_pb2, embedder_pb2, audit_pb2):
    for service in module.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            message = getattr(module, method.input_type.name, None)
            if message is not None and all(message is not known for known, _ in TARGETS):
                TARGETS.append((message, lambda r: None))


def _examples() -> dict[type[Message], Message]:
    """A well-formed request of each checked kind, so the fuzzer starts past the parser."""
    origin = common_pb2.Origin(
        actor="alice", case_number="CASE-1/2026", purpose="investigation", request_id=str(uuid.UUID(int=1))
    )
    stamp = Timestamp(seconds=1_764_547_200)
    return {
        gateway_pb2.SearchRequest: gateway_pb2.SearchRequest(
            case_number="CASE-1/2026", purpose="investigation", authorisation_reference="WARRANT-7", max_candidates=5
        ),
        gateway_pb2.EnrollRequest: gateway_pb2.EnrollRequest(subject_id="S-0001"),
        gateway_pb2.SubmitReviewRequest: gateway_pb2.SubmitReviewRequest(
            search_id=str(uuid.UUID(int=2)),
            rank=1,
            decision=gateway_pb2.DECISION_REJECT,
            notes="different ears",
            features=["ears"],
        ),
        gateway_pb2.ExportCaseRequest: gateway_pb2.ExportCaseRequest(case_number="2026.000123"),
        gateway_pb2.DeleteSubjectRequest: gateway_pb2.DeleteSubjectRequest(subject_id="S-0001"),
        matcher_pb2.SearchRequest: matcher_pb2.SearchRequest(origin=origin),
        matcher_pb2.EnrollRequest: matcher_pb2.EnrollRequest(origin=origin, subject_id="S-0001"),
        matcher_pb2.DeleteSubjectRequest: matcher_pb2.DeleteSubjectRequest(origin=origin, subject_id="S-0001"),
        matcher_pb2.DeleteRecordRequest: matcher_pb2.DeleteRecordRequest(origin=origin),
        matcher_pb2.SwitchModelRequest: matcher_pb2.SwitchModelRequest(origin=origin),
        audit_pb2.QueryRequest: audit_pb2.QueryRequest(
            case_number="CASE-1/2026", since=stamp, until=stamp, limit=10, kinds=["search.completed"]
        ),
        audit_pb2.AuditEvent: audit_pb2.AuditEvent(
            event_id=str(uuid.UUID(int=3)),
            kind="search.completed",
            occurred_at=stamp,
            actor="alice",
            case_number="CASE-1/2026",
            purpose="investigation",
            details_json='{"candidates": 3}',
        ),
    }


def seed_inputs() -> list[bytes]:
    """One input per target: its example (or an empty message) followed by the target's index,
    which the FuzzedDataProvider reads from the end."""
    examples = _examples()
    inputs = []
    for index, (message_type, _) in enumerate(TARGETS):
        example = examples.get(message_type, message_type())
        inputs.append(example.SerializeToString() + bytes([index]))
    return inputs


def one_input(data: bytes) -> None:
    """Parse one input as a chosen request message and run its checks."""
    provider = atheris.FuzzedDataProvider(data)
    message_type, check = TARGETS[provider.ConsumeIntInRange(0, len(TARGETS) - 1)]
    try:
        message = message_type.FromString(provider.ConsumeBytes(provider.remaining_bytes()))
    except DecodeError:
        return
    message.SerializeToString()  # forwarded as parsed
    try:
        check(message)
    except CandorError:
        pass


def main() -> None:
    """Run the fuzzer with libFuzzer's command line."""
    if not SMOKE:
        atheris.instrument_all()  # coverage from every Python function loaded, the libraries' included
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
