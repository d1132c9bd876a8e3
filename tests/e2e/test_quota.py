"""The daily search quota through two gateway processes: a burst of one user's searches spread over
both, at once, gets exactly the quota's number answered and the rest refused, on the chain too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from candor.gateway.v1 import gateway_pb2
from candor_cli import LocalStack
from candor_kit.policy import DEFAULT_POLICY_YAML
from tests.e2e.test_safeguards import through_both_gateways
from tests.e2e.test_stack_cli import candor, wait_for_audit
from tests.integration.test_search_flow import faceless_png

pytestmark = pytest.mark.e2e

QUOTA = 3
#: Searches sent at once, alternating between the two gateways: more than the quota on each.
BURST = 12


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, samples: Path) -> Iterator[LocalStack]:
    root = tmp_path_factory.mktemp("quota")
    policy = root / "policy.yaml"
    policy.write_text(
        DEFAULT_POLICY_YAML.replace("searches_per_user_per_day: 200", f"searches_per_user_per_day: {QUOTA}")
    )
    stack = LocalStack(root / "stack", policy=policy)
    stack.up()
    stack.add_replica("gateway")
    candor(stack, "enroll", str(samples / "obama.jpg"), "--subject", "obama")
    yield stack
    stack.down()


def search_at_once(stack: LocalStack, token: str, probe: bytes, case: str, count: int) -> list[grpc.StatusCode]:
    """``count`` searches of ``probe`` sent at the same moment, alternating between the two gateway
    processes; the status code of each."""
    request = gateway_pb2.SearchRequest(
        probe_image=probe, case_number=case, purpose="investigation", authorisation_reference="W-QUOTA"
    )
    metadata = (("authorization", f"Bearer {token}"),)
    return through_both_gateways(stack, count, lambda stub, _: stub.Search(request, metadata=metadata, timeout=120))


def test_a_burst_of_searches_through_two_gateways_gets_exactly_the_quota(stack: LocalStack, samples: Path) -> None:
    probe = (samples / "obama2.jpg").read_bytes()
    for burst in range(2):  # a race one burst misses by luck has to be missed twice
        user = f"quota-{burst}"
        codes = search_at_once(stack, stack.token(user, ("investigator",)), probe, f"QUOTA-{burst}", BURST)
        answered = codes.count(grpc.StatusCode.OK)
        assert answered == QUOTA, f"{answered} of {BURST} searches answered through two gateways; the quota is {QUOTA}"
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == BURST - QUOTA, codes
        refusals = wait_for_audit(
            stack,
            "SELECT details_json FROM audit_record WHERE kind = 'search.refused' AND actor = ?",
            (user,),
        )
        # Waits for the quota's number of records (the chain takes them one by one), then counts.
        [(completed,)] = wait_for_audit(
            stack,
            "SELECT COUNT(*) FROM audit_record WHERE kind = 'search.completed' AND actor = ?"
            f" HAVING COUNT(*) >= {QUOTA}",
            (user,),
        )
        assert completed == QUOTA
        assert {json.loads(details)["rule"] for (details,) in refusals} == {"quota"}


def test_searches_that_end_unrecorded_give_their_claim_on_the_quota_back(stack: LocalStack, samples: Path) -> None:
    """A search refused after it claimed its place in the day's count (a photo with no face, found
    out while the count was taken) does not count: the user still gets the quota's searches."""
    token = stack.token("quota-faceless", ("investigator",))
    faceless = search_at_once(stack, token, faceless_png(), "QUOTA-NOFACE", BURST)
    assert set(faceless) == {grpc.StatusCode.INVALID_ARGUMENT}, faceless
    codes = search_at_once(stack, token, (samples / "obama2.jpg").read_bytes(), "QUOTA-NOFACE", BURST)
    assert codes.count(grpc.StatusCode.OK) == QUOTA, codes
