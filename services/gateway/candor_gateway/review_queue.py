"""The review queue's filters and orders: which waiting searches a ListPendingReviews request
names, in which order, decided from the chain's reviews alone ("partly reviewed" is the caller's
own unfinished work, never another reviewer's progress, which blind review hides)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from candor.gateway.v1 import gateway_pb2
from candor_gateway.search_file import SearchFile
from candor_kit import InvalidInput
from candor_kit.policy import MAX_CASE_CHARS, is_printable
from candor_kit.tokens import Principal

#: The pending list's page: the default and the largest a caller may ask for.
DEFAULT_PAGE = 100
MAX_PAGE = 500


def _searched_at(found: SearchFile) -> tuple[int, int]:
    return (found.searched_at.seconds, found.searched_at.nanos)


#: Sort keys of the pending list, by PendingOrder; the search id breaks ties, so pages are stable.
PENDING_ORDERS: dict[int, Callable[[SearchFile], Any]] = {
    gateway_pb2.PENDING_ORDER_OLDEST_FIRST: lambda found: (_searched_at(found), found.search_id),
    gateway_pb2.PENDING_ORDER_NEWEST_FIRST: lambda found: (tuple(-v for v in _searched_at(found)), found.search_id),
    gateway_pb2.PENDING_ORDER_CASE: lambda found: (found.case_number, _searched_at(found), found.search_id),
}


def pending_filter(request: gateway_pb2.ListPendingReviewsRequest) -> Callable[[Principal, SearchFile], bool]:
    """Whether a waiting search matches a pending-list request's filters; InvalidInput for a
    malformed filter."""
    if request.order not in PENDING_ORDERS:
        raise InvalidInput("order must be one of PENDING_ORDER_OLDEST_FIRST, _NEWEST_FIRST or _CASE")
    for name, value in (("case_prefix", request.case_prefix), ("purpose", request.purpose)):
        if len(value) > MAX_CASE_CHARS or not is_printable(value):
            raise InvalidInput(f"{name} is at most {MAX_CASE_CHARS} printable characters")
    before = request.searched_before if request.HasField("searched_before") else None

    def matches(principal: Principal, found: SearchFile) -> bool:
        ranks = [candidate["rank"] for candidate in found.candidates]
        mine = [rank for rank in ranks if principal.user in found.reviewers(rank)]
        return (
            found.case_number.startswith(request.case_prefix)
            and (not request.purpose or found.purpose == request.purpose)
            and (before is None or _searched_at(found) < (before.seconds, before.nanos))
            and (
                not request.disputed_only
                or (
                    "supervisor" in principal.roles
                    and any(
                        found.status(rank) == gateway_pb2.CANDIDATE_STATUS_DISPUTED and rank not in mine
                        for rank in ranks
                    )
                )
            )
            and (not request.partly_reviewed_only or 0 < len(mine) < len(ranks))
        )

    return matches
