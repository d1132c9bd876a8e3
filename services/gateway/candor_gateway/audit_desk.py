"""The audit log as auditors and supervisors read it through the gateway: the chain's
verification, a case's discovery export, and pages of records for oversight reports. Every read
is itself audited, and a refused one too.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from candor.audit.v1 import audit_pb2
from candor.common.v1 import common_pb2
from candor.gateway.v1 import gateway_pb2
from candor_gateway.access import Permission, require
from candor_gateway.audit_reader import PAGE, AuditReader
from candor_gateway.refusals import audit_refusal
from candor_kit import AuditPublisher, Bus, CandorError, InvalidInput, PolicyViolation, subjects
from candor_kit.audit_events import record_details
from candor_kit.policy import MAX_CASE_CHARS, Rule, is_printable
from candor_kit.tokens import Principal


def own_searches(records: Sequence[audit_pb2.AuditRecord], caller: str) -> list[audit_pb2.AuditRecord]:
    """The records of a case that belong to the searches ``caller`` filed: those of the searches
    themselves and everything naming one of them (the matcher's record, reviews, outcomes, the
    probe's deletion). Empty when the caller filed no search there, so that filing one search under
    another team's case number never opens that team's searches."""
    searches = {r.event.event_id for r in records if r.event.kind == "search.completed" and r.event.actor == caller}

    def names_one(record: audit_pb2.AuditRecord) -> bool:
        details = record_details(record)
        return details.get("search_id") in searches or details.get("request_id") in searches

    if not searches:
        return []
    return [r for r in records if r.event.event_id in searches or names_one(r) or r.event.actor == caller]


class AuditDesk:
    """Verification, case exports and record pages, each for the roles allowed to ask."""

    def __init__(self, bus: Bus, audit: AuditPublisher, reader: AuditReader, timeout_s: float) -> None:
        self._bus = bus
        self._audit = audit
        self._reader = reader
        self._timeout = timeout_s

    async def verify_audit(
        self, principal: Principal, kept: Sequence[audit_pb2.Checkpoint] = ()
    ) -> audit_pb2.VerifyResponse:
        """Ask the audit service to walk the chain, with any checkpoints the caller kept."""
        try:
            require(principal, Permission.VERIFY_AUDIT)
            request = audit_pb2.VerifyRequest(checkpoints=kept)
            result = await self._bus.request(subjects.AUDIT_VERIFY, request, audit_pb2.VerifyResponse, self._timeout)
        except CandorError as error:
            await audit_refusal(self._audit, "verify_audit", error, principal.user)
            raise
        await self._audit.publish(
            "audit.verified",
            actor=principal.user,
            details={"ok": result.ok, "records": result.records_checked, "first_bad": result.first_bad_sequence},
        )
        return result

    async def export_case(self, principal: Principal, case_number: str) -> gateway_pb2.ExportCaseResponse:
        """Every audit record naming a case, with the chain's verification; the export is audited."""
        try:
            require(principal, Permission.EXPORT_CASE)
            if not case_number.strip():
                raise InvalidInput("case_number is required")
            # Looser than a search's grammar, so that a case recorded under an older rule can still
            # be exported; but never a text that no search could have carried.
            if len(case_number) > MAX_CASE_CHARS or not is_printable(case_number):
                raise InvalidInput(f"a case number is at most {MAX_CASE_CHARS} printable characters")
            request = audit_pb2.VerifyRequest(case_number=case_number)
            verification = await self._bus.request(
                subjects.AUDIT_VERIFY, request, audit_pb2.VerifyResponse, self._timeout
            )
            records = await self._reader.records(on_behalf_of=principal.user, case_number=case_number)
            scope = ""
            if "auditor" not in principal.roles:
                scope = f"only the searches {principal.user} filed in the case and what followed them"
                # The case's manifest would name the records left out: a part goes without it.
                verification.ClearField("case_manifest")
                records = own_searches(records, principal.user)
                if not records:
                    raise PolicyViolation(
                        f"{principal.user} has not searched in case {case_number}: "
                        "a case system exports only the searches it filed and what followed them",
                        rule=Rule.ROLE,
                    )
        except CandorError as error:
            await audit_refusal(self._audit, "export_case", error, principal.user, case_number=case_number)
            raise
        exported_at = Timestamp()
        exported_at.GetCurrentTime()
        await self._audit.publish(
            "case.exported",
            actor=principal.user,
            case_number=case_number,
            details={
                "records": len(records),
                "head_hash": verification.head_hash,
                "chain_ok": verification.ok,
                "scope": scope or None,
            },
        )
        return gateway_pb2.ExportCaseResponse(
            case_number=case_number,
            records=records,
            verification=verification,
            exported_at=exported_at,
            exported_by=principal.user,
            scope=scope,
        )

    async def list_audit_records(
        self, principal: Principal, request: gateway_pb2.ListAuditRecordsRequest
    ) -> gateway_pb2.ListAuditRecordsResponse:
        """One page of the audit records of a period, for oversight reports; the read is audited."""
        try:
            require(principal, Permission.LIST_AUDIT)
            query = audit_pb2.QueryRequest(
                limit=request.limit or PAGE,
                after_sequence=request.after_sequence,
                kinds=list(request.kinds),
                origin=common_pb2.Origin(actor=principal.user),
            )
            if request.HasField("since"):
                query.since.CopyFrom(request.since)
            if request.HasField("until"):
                query.until.CopyFrom(request.until)
            page = await self._bus.request(subjects.AUDIT_QUERY, query, audit_pb2.QueryResponse, self._timeout)
        except CandorError as error:
            await audit_refusal(self._audit, "list_audit", error, principal.user)
            raise
        await self._audit.publish(
            "audit.listed",
            actor=principal.user,
            details={"after_sequence": request.after_sequence, "records": len(page.records)},
        )
        return gateway_pb2.ListAuditRecordsResponse(records=page.records, more=page.more)
