"""The review queue scales: more searches than a page wait, and the reviewer gets the total, every
page, the order asked for and the filters, through the running services; nothing stops at 100."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_cli.stack import AUDIENCE, LOCAL_ISSUER
from candor_client import GatewayClient
from candor_kit.tokens import issue_token, load_private_key
from tests.integration.conftest import TOKEN_KEY, InProcessStack
from tests.integration.test_governance import ENROLLER, fresh_investigator, probe_request

pytestmark = pytest.mark.asyncio(loop_scope="session")

#: More than the old silent cut of 100.
INVESTIGATIONS = 105
MISSING_PERSONS = 3
TOKENS_BY_USER: dict[str, str] = {}


async def test_the_queue_has_a_total_pages_orders_and_filters_past_a_hundred(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path
) -> None:
    enrol = gateway_pb2.EnrollRequest(image=(samples / "obama.jpg").read_bytes(), subject_id="obama")
    await gateway.Enroll(enrol, metadata=ENROLLER)
    _, investigator = fresh_investigator()
    made: list[str] = []
    for index in range(INVESTIGATIONS + MISSING_PERSONS):
        purpose = "investigation" if index < INVESTIGATIONS else "missing-person"
        request = probe_request(samples, f"QUEUE-{index:03d}", purpose=purpose)
        made.append((await gateway.Search(request, metadata=investigator)).search_id)
    quinn = reviewer_metadata("quinn")

    async def listing(**fields: object) -> gateway_pb2.ListPendingReviewsResponse:
        request = gateway_pb2.ListPendingReviewsRequest(**{"case_prefix": "QUEUE-", **fields})  # type: ignore[arg-type]
        return await gateway.ListPendingReviews(request, metadata=quinn)

    first = await listing()
    assert (first.total, len(first.searches), first.more) == (len(made), 100, True)
    second = await listing(offset=100)
    assert (second.total, len(second.searches), second.more) == (len(made), len(made) - 100, False)
    # Oldest first, every search once across the pages.
    assert [s.search_id for s in [*first.searches, *second.searches]] == made

    newest = await listing(order=gateway_pb2.PENDING_ORDER_NEWEST_FIRST, limit=5)
    assert [s.search_id for s in newest.searches] == made[::-1][:5]
    by_case = await listing(order=gateway_pb2.PENDING_ORDER_CASE, limit=500)
    cases = [s.case_number for s in by_case.searches]
    assert cases == sorted(cases) and len(cases) == len(made)

    missing = await listing(purpose="missing-person")
    assert [s.search_id for s in missing.searches] == made[INVESTIGATIONS:] and missing.total == MISSING_PERSONS
    one_case = await listing(case_prefix="QUEUE-04")
    assert one_case.total == 10  # QUEUE-040 to QUEUE-049

    # Waiting longest: searched before the 50th search was made.
    fiftieth = (await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=made[49]), metadata=quinn)).searched_at
    older = await listing(searched_before=fiftieth, limit=500)
    assert [s.search_id for s in older.searches] == made[:49]

    # The CLI's client pages through all of them (`candor review list` prints what it returns).
    with GatewayClient(stack.addresses["gateway"], TOKENS_BY_USER["quinn"]) as client:
        every, total = await asyncio.to_thread(client.all_pending_reviews, case_prefix="QUEUE-")
    assert [s.search_id for s in every] == made and total == len(made)

    # A reviewer has no disputes to settle; malformed pages are refused.
    assert (await listing(disputed_only=True)).total == 0
    for bad in ({"limit": 501}, {"offset": -1}, {"case_prefix": "Q\x00"}):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await listing(**bad)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def reviewer_metadata(user: str) -> tuple[tuple[str, str]]:
    """Call metadata for a reviewer no other test uses (its queue holds every test's searches)."""
    token = issue_token(load_private_key(TOKEN_KEY), user, ["reviewer"], 600, LOCAL_ISSUER, AUDIENCE)
    TOKENS_BY_USER[user] = token
    return (("authorization", f"Bearer {token}"),)
