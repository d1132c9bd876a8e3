"""A reviewer's unrecorded decision, kept across a sign-in.

When a session ends while a reviewer writes a decision, the posted decision cannot be recorded
(the gateway would refuse the dead token, and nobody else may record it for them). The desk keeps
it instead, sealed in a short-lived cookie of its own (AES-256-GCM under the session key, like the
session), and after the reviewer signs in again returns them to the candidate with the decision
and notes filled in, to check and record. It is given back only to the same user, for the same
search, once; nothing is ever recorded from it without the reviewer's own submit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from candor_kit import conclusions
from candor_review.session import Sealer, Session

DRAFT_COOKIE = "__Host-candor-draft"
#: How long a kept draft waits for its reviewer to sign in again.
DRAFT_TTL_S = 3600


@dataclass(frozen=True)
class Draft:
    """A decision written but not recorded: the candidate, the choice and the notes."""

    search_id: str
    rank: int
    decision: str
    notes: str
    features: tuple[str, ...] = ()


class Drafts:
    """Keeps one draft per browser in a sealed cookie, and gives it back after sign-in."""

    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer

    def keep(self, response: Response, draft: Draft, user: str, look: str) -> None:
        """Seal ``draft`` (of ``user``, seen with the view ``look``) into the response's cookie."""
        value = {
            "search_id": draft.search_id,
            "rank": draft.rank,
            "decision": draft.decision if draft.decision in conclusions.VALUES else "",
            "notes": draft.notes,
            "features": [feature for feature in draft.features if feature in conclusions.FEATURES],
            "user": user,
            "look": look,
            "until": int(time.time()) + DRAFT_TTL_S,
        }
        response.set_cookie(
            DRAFT_COOKIE, self._sealer.seal(DRAFT_COOKIE, value), max_age=DRAFT_TTL_S, path="/",
            secure=True, httponly=True, samesite="strict",
        )  # fmt: skip

    def _opened(self, request: Request) -> dict[str, object] | None:
        value = self._sealer.open(DRAFT_COOKIE, request.cookies.get(DRAFT_COOKIE))
        if value is None or int(value.get("until", 0)) < time.time():  # type: ignore[call-overload]
            return None
        return value

    def resume_url(self, request: Request, user: str) -> str | None:
        """Where a user who just signed in left an unrecorded decision, if they did."""
        value = self._opened(request)
        if value is None or value.get("user") != user:
            return None
        look = str(value.get("look") or "")
        return f"/searches/{value['search_id']}?rank={int(value['rank'])}{'&' + look if look else ''}#compare"  # type: ignore[call-overload]

    def take(self, request: Request, session: Session, search_id: str) -> Draft | None:
        """The draft this user left on this search, if any (the page then forgets it)."""
        value = self._opened(request)
        if value is None or value.get("user") != session.user or value.get("search_id") != search_id:
            return None
        features = tuple(str(feature) for feature in value.get("features") or ())  # type: ignore[attr-defined]
        return Draft(search_id, int(value["rank"]), str(value["decision"]), str(value["notes"]), features)  # type: ignore[call-overload]

    def forget(self, response: Response) -> None:
        """Drop the draft cookie."""
        response.delete_cookie(DRAFT_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
