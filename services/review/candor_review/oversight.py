"""Oversight's pages: a case with its whole review trail, for supervisors and auditors, and the
oversight report of a period (page, CSV, PDF), for auditors."""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from candor_cli.report import (
    AGREEMENT_NOTE,
    EVIDENCE_KINDS,
    PROFICIENCY_HEADER,
    PROFICIENCY_NOTE,
    REVIEWS_NOTE,
    OversightReport,
    agreement_rows,
    compute,
    models_view,
    proficiency_rows,
    to_csv,
    to_pdf,
)
from candor_kit.policy import CASE_NUMBER
from candor_review.desk import (
    MAX_REPORT_DAYS,
    Desk,
    Refused,
)


class Oversight:
    """The case page and the oversight report."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk

    def routes(self) -> list[Route]:
        """This part's pages and forms."""
        return [
            Route("/case", self.case_page),
            Route("/report", self.report_page),
            Route("/report.csv", self.report_download),
            Route("/report.pdf", self.report_download),
        ]

    async def case_page(self, request: Request) -> Response:
        """A case's searches with their whole review trail."""
        session = self.desk.need(request, "supervisor", "auditor")
        number = request.query_params.get("number", "").strip()
        if not number:
            return self.desk.render(request, "case.html", case=None, number="")
        if not CASE_NUMBER.match(number):
            raise Refused(400, "a case number is 2 to 64 letters, digits and ._-/")
        case = await self.desk.gateway_for(session).case(number)
        return self.desk.render(request, "case.html", case=case, number=number)

    async def report_of(self, request: Request) -> tuple[OversightReport, str, str]:
        """The oversight report of the period the query names (today by default), for an auditor."""
        session = self.desk.need(request, "auditor")
        today = dt.date.today()
        try:
            start = dt.date.fromisoformat(request.query_params.get("from") or today.isoformat())
            end = dt.date.fromisoformat(request.query_params.get("to") or today.isoformat())
        except ValueError as exc:
            raise Refused(400, "dates are YYYY-MM-DD") from exc
        if end < start or (end - start).days >= MAX_REPORT_DAYS:
            raise Refused(400, f"the period runs forward and covers at most {MAX_REPORT_DAYS} days")
        gateway = self.desk.gateway_for(session)
        until = f"{(end + dt.timedelta(days=1)).isoformat()}T00:00:00Z"
        records = await gateway.audit_records(f"{start.isoformat()}T00:00:00Z", until)
        # The evidence, whenever it was made: the calibrations searches ran under, the tests' answers.
        evidence = await gateway.audit_records(None, until, kinds=EVIDENCE_KINDS)
        return compute(records, (start.isoformat(), end.isoformat()), evidence), start.isoformat(), end.isoformat()

    async def report_page(self, request: Request) -> Response:
        """The oversight report of a period, as a page."""
        report, start, end = await self.report_of(request)
        models, calibrated = models_view(report)
        return self.desk.render(
            request, "report.html", report=report, start=start, end=end, models=models, calibrated=calibrated,
            reviews_note=REVIEWS_NOTE.format(settled=report.settled_disputes),
            proficiency=proficiency_rows(report), proficiency_header=PROFICIENCY_HEADER,
            proficiency_note=PROFICIENCY_NOTE, agreement=agreement_rows(report), agreement_note=AGREEMENT_NOTE,
        )  # fmt: skip

    async def report_download(self, request: Request) -> Response:
        """The oversight report of a period, as CSV or PDF."""
        report, start, end = await self.report_of(request)
        form = request.url.path.rsplit(".", 1)[-1]
        name = f"candor-oversight-{start}-to-{end}.{form}"
        if form == "csv":
            body, media = to_csv(report).encode(), "text/csv; charset=utf-8"
        else:
            body, media = to_pdf(report), "application/pdf"
        return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})
