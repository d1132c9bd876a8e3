"""What a caller's roles let them do: each RPC has an explicit allow-list of roles.

Who the caller is comes from their bearer token, checked by candor_kit.tokens (signature by a
trusted key, issuer, audience, expiry, lifetime); tokens are never stored or logged.
"""

from __future__ import annotations

import enum

from candor_kit.errors import PolicyViolation
from candor_kit.tokens import ROLES, Principal


class Permission(enum.Enum):
    """What a call needs: one per RPC of the gateway."""

    SEARCH = "Search"
    DETECT = "DetectFaces"
    ENROLL = "Enroll"
    DELETE = "DeleteSubject"
    DELETE_RECORD = "DeleteRecord"
    VERIFY_AUDIT = "VerifyAudit"
    EXPORT_CASE = "ExportCase"
    LIST_AUDIT = "ListAuditRecords"
    LIST_REVIEWS = "ListPendingReviews"
    SUBMIT_REVIEW = "SubmitReview"
    RECORD_ANALYSIS = "RecordAnalysis"
    SEED_PROFICIENCY = "SeedProficiencyTest"
    GET_SEARCH = "GetSearch"
    START_IMPORT = "StartImport"
    SUBMIT_IMPORT = "SubmitImportItems"
    GET_IMPORT = "GetImport"
    LIST_IMPORT_RESULTS = "ListImportResults"
    START_REEMBED = "StartReembed"
    LIST_REEMBED_WORK = "ListReembedWork"
    SWITCH_MODEL = "SwitchGalleryModel"
    GET_GALLERY_MODELS = "GetGalleryModels"
    GET_SEARCH_PHOTO = "GetSearchPhoto"
    GET_RECORD_PHOTO = "GetRecordPhoto"
    GET_CASE = "GetCase"
    END_SESSION = "EndSession"


#: Each RPC's allow-list of roles. Nobody else may call it.
RPC_ROLES: dict[Permission, frozenset[str]] = {
    # A case-management system files searches for its cases as an investigator does, under the
    # same policy (purposes, case numbers, quotas); a booking system only keeps the gallery in step.
    Permission.SEARCH: frozenset({"investigator", "case-system"}),
    Permission.DETECT: frozenset({"investigator", "gallery-admin", "case-system", "booking-sync"}),
    # A booking system's enrolments must name their source (the gallery desk checks).
    Permission.ENROLL: frozenset({"gallery-admin", "booking-sync"}),
    Permission.START_IMPORT: frozenset({"gallery-admin", "booking-sync"}),
    Permission.SUBMIT_IMPORT: frozenset({"gallery-admin", "booking-sync"}),
    # Auditors read import reports too.
    Permission.GET_IMPORT: frozenset({"gallery-admin", "auditor", "booking-sync"}),
    Permission.LIST_IMPORT_RESULTS: frozenset({"gallery-admin", "auditor", "booking-sync"}),
    Permission.START_REEMBED: frozenset({"gallery-admin"}),
    Permission.LIST_REEMBED_WORK: frozenset({"gallery-admin"}),
    Permission.SWITCH_MODEL: frozenset({"gallery-admin"}),
    # Which model answers searches is no secret to anyone who works with them.
    Permission.GET_GALLERY_MODELS: frozenset(
        {"investigator", "reviewer", "supervisor", "auditor", "gallery-admin", "case-system", "booking-sync"}
    ),
    Permission.DELETE: frozenset({"gallery-admin", "booking-sync"}),
    Permission.DELETE_RECORD: frozenset({"gallery-admin", "booking-sync"}),
    Permission.VERIFY_AUDIT: frozenset({"auditor", "supervisor", "admin"}),
    # A case system's export holds only its own searches and what followed them (the audit desk
    # filters); an auditor's holds the whole case.
    Permission.EXPORT_CASE: frozenset({"auditor", "case-system"}),
    Permission.LIST_AUDIT: frozenset({"auditor"}),
    Permission.LIST_REVIEWS: frozenset({"reviewer", "supervisor"}),
    Permission.SUBMIT_REVIEW: frozenset({"reviewer", "supervisor"}),
    Permission.RECORD_ANALYSIS: frozenset({"reviewer", "supervisor"}),
    # Supervisors test their reviewers; nobody else seeds what reviewers cannot tell from work.
    Permission.SEED_PROFICIENCY: frozenset({"supervisor"}),
    # Investigators and case systems see only their own searches (the review desk checks).
    Permission.GET_SEARCH: frozenset({"investigator", "reviewer", "supervisor", "auditor", "case-system"}),
    # Faces are shown to those who judge them and to those who oversee the judging, not to the
    # searcher (the review desk checks) nor to anyone browsing the gallery.
    Permission.GET_SEARCH_PHOTO: frozenset({"reviewer", "supervisor", "auditor"}),
    Permission.GET_RECORD_PHOTO: frozenset({"gallery-admin"}),
    Permission.GET_CASE: frozenset({"supervisor", "auditor"}),
    # Anyone may end their own session.
    Permission.END_SESSION: frozenset(ROLES),
}


def require(principal: Principal, permission: Permission) -> None:
    """Raise PolicyViolation unless one of the principal's roles is on the RPC's allow-list."""
    if not principal.roles & RPC_ROLES[permission]:
        allowed = ", ".join(sorted(RPC_ROLES[permission]))
        raise PolicyViolation(
            f"user {principal.user} may not call {permission.value} (roles allowed: {allowed})", rule="role"
        )
