"""The review queue's page: which searches waiting for the user it shows, in what order, and where
the previous and next pages are, read from the page's query string and kept in its links."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from candor.gateway.v1 import gateway_pb2
from candor_cli.reviews import ORDERS  # the queue's orders by name, as `candor review list` takes them

#: Searches shown on one page of the queue.
PAGE_SIZE = 50
#: The waiting-time filter: searches made at least this many days ago, by the choice's label.
AGES = {"": "any age", "1": "over a day", "7": "over a week", "30": "over 30 days"}
#: The longest case prefix or purpose the filters take (a case number's own limit).
MAX_FILTER_CHARS = 64
#: The highest page number a link may name (500 searches a page would be the gateway's own limit).
MAX_PAGE = 100_000


class QueueQueryError(ValueError):
    """A queue link or filter form with a value the queue does not take; the message says which."""


@dataclass(frozen=True)
class QueueQuery:
    """What the queue shows: filters, order and page."""

    case: str = ""
    purpose: str = ""
    age: str = ""
    disputed: bool = False
    partly: bool = False
    order: str = "oldest"
    page: int = 1

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> QueueQuery:
        """The query a page's query string names; QueueQueryError for a value it does not take."""
        case, purpose = params.get("case", "").strip(), params.get("purpose", "").strip()
        if len(case) > MAX_FILTER_CHARS or len(purpose) > MAX_FILTER_CHARS:
            raise QueueQueryError(f"a case or purpose filter is at most {MAX_FILTER_CHARS} characters")
        age, order, page = params.get("age", ""), params.get("order", "oldest"), params.get("page", "1")
        if age not in AGES:
            raise QueueQueryError("the age filter is one of the choices offered")
        if order not in ORDERS:
            raise QueueQueryError("the order is oldest, newest or case")
        if not (page.isascii() and page.isdigit() and 1 <= int(page) <= MAX_PAGE):
            raise QueueQueryError(f"the page is a number from 1 to {MAX_PAGE}")
        return cls(case, purpose, age, params.get("disputed") == "1", params.get("partly") == "1", order, int(page))

    def request(self, now: float | None = None) -> gateway_pb2.ListPendingReviewsRequest:
        """The gateway request for this page."""
        request = gateway_pb2.ListPendingReviewsRequest(
            limit=PAGE_SIZE,
            offset=(self.page - 1) * PAGE_SIZE,
            order=ORDERS[self.order],
            case_prefix=self.case,
            purpose=self.purpose,
            disputed_only=self.disputed,
            partly_reviewed_only=self.partly,
        )
        if self.age:
            before = dt.datetime.fromtimestamp(now or time.time(), dt.UTC) - dt.timedelta(days=int(self.age))
            request.searched_before.FromDatetime(before)
        return request

    @property
    def first(self) -> int:
        """The number (from 1) of the page's first search."""
        return (self.page - 1) * PAGE_SIZE + 1

    @property
    def filtered(self) -> bool:
        """Whether any filter narrows the queue."""
        return bool(self.case or self.purpose or self.age or self.disputed or self.partly)

    def summary(self, total: int, on_page: int) -> str:
        """What the queue holds, in words: how many searches wait (or match), and which are shown."""
        if not total:
            return (
                "No search waiting for you matches these filters."
                if self.filtered
                else "Nothing waits for your review."
            )
        searches = "1 search" if total == 1 else f"{total} searches"
        verb = ("matches" if total == 1 else "match") if self.filtered else ("waits" if total == 1 else "wait")
        said = f"{searches} {verb}" + (" these filters" if self.filtered else " for your review")
        if on_page < total:
            said += f"; showing {self.first} to {self.first + on_page - 1}"
        return said + "."

    def link(self, **changes: object) -> str:
        """The queue's address with some of this query changed (the defaults left out)."""
        changed = replace(self, **changes)  # type: ignore[arg-type]
        fields = {
            "case": changed.case,
            "purpose": changed.purpose,
            "age": changed.age,
            "disputed": "1" if changed.disputed else "",
            "partly": "1" if changed.partly else "",
            "order": "" if changed.order == "oldest" else changed.order,
            "page": "" if changed.page == 1 else str(changed.page),
        }
        query = urlencode({name: value for name, value in fields.items() if value})
        return "/" + (f"?{query}" if query else "")
