"""Client request ids on a real nats-server: a retried call does its work once, whichever replica or
how many racing calls ask, and the register's edge cases (refusals kept, failures given back, a dead
gateway's claim taken over, another request under the same id refused)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator

import nats
import pytest

from candor.gateway.v1 import gateway_pb2
from candor_gateway.idempotency import TAKE_OVER_WITHIN_S, Operation, RequestRegister
from candor_kit import Bus, InvalidInput, PolicyViolation, PreconditionFailed, ServiceUnavailable

Reply = gateway_pb2.DeleteSubjectResponse


@pytest.fixture
async def registers(nats_url: str) -> AsyncIterator[tuple[RequestRegister, RequestRegister]]:
    """Two gateway replicas' registers over one bucket, each on its own connection."""
    buses = [Bus(await nats.connect(nats_url)) for _ in range(2)]
    replicas = tuple(RequestRegister(bus, wait_s=2.0) for bus in buses)
    for register in replicas:
        await register.open()
    await replicas[0].bucket.purge_deletes(olderthan=0)
    yield replicas  # type: ignore[misc]
    for bus in buses:
        await bus.close()


class Work:
    """A call's work: counts its runs and answers with the count."""

    def __init__(self, delay_s: float = 0.0, fail: Exception | None = None) -> None:
        self.runs = 0
        self.delay_s = delay_s
        self.fail = fail
        #: The operation id of each run, and whether it was told it redid an earlier run's work.
        self.ids: list[str] = []
        self.redone: list[bool] = []

    async def __call__(self, operation: Operation) -> Reply:
        self.runs += 1
        self.ids.append(operation.id)
        self.redone.append(operation.redone)
        await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        return Reply(deleted_records=self.runs)


def request(
    subject: str = "S-1", reason: str = "court order", request_id: str = ""
) -> gateway_pb2.DeleteSubjectRequest:
    return gateway_pb2.DeleteSubjectRequest(
        subject_id=subject, reason=reason, client_request_id=request_id or uuid.uuid4().hex
    )


async def test_racing_calls_on_two_replicas_run_the_work_once_and_share_its_answer(
    registers: tuple[RequestRegister, RequestRegister],
) -> None:
    work = Work(delay_s=0.2)
    asked = request()
    answers = await asyncio.gather(*(registers[n % 2].once("ann", asked, work, Reply) for n in range(8)))
    assert work.runs == 1
    assert {answer.deleted_records for answer in answers} == {1}
    again = await registers[1].once("ann", asked, work, Reply)
    assert (work.runs, again.deleted_records) == (1, 1)


async def test_the_same_id_with_another_request_is_refused(registers: tuple[RequestRegister, RequestRegister]) -> None:
    work = Work()
    first = request()
    await registers[0].once("ann", first, work, Reply)
    other = request(subject="S-2", request_id=first.client_request_id)
    with pytest.raises(PreconditionFailed, match="different request"):
        await registers[1].once("ann", other, work, Reply)
    assert work.runs == 1


async def test_ids_belong_to_their_caller_and_their_call(registers: tuple[RequestRegister, RequestRegister]) -> None:
    work = Work()
    asked = request()
    await registers[0].once("ann", asked, work, Reply)
    await registers[0].once("bob", asked, work, Reply)
    enrol = gateway_pb2.EnrollRequest(subject_id="S-1", client_request_id=asked.client_request_id)
    await registers[0].once("ann", enrol, work, Reply)
    assert work.runs == 3


async def test_a_refusal_is_kept_and_a_failure_a_retry_may_not_meet_is_given_back(
    registers: tuple[RequestRegister, RequestRegister],
) -> None:
    refused = Work(fail=PolicyViolation("purpose 'curiosity' is not allowed"))
    asked = request()
    for _ in range(2):
        with pytest.raises(PolicyViolation, match="curiosity"):
            await registers[0].once("ann", asked, refused, Reply)
    assert refused.runs == 1

    flaky = Work(fail=ServiceUnavailable("the matcher is restarting"))
    asked = request()
    with pytest.raises(ServiceUnavailable):
        await registers[0].once("ann", asked, flaky, Reply)
    flaky.fail = None
    answer = await registers[1].once("ann", asked, flaky, Reply)
    assert (flaky.runs, answer.deleted_records) == (2, 2)
    # Redone under the first run's operation id: whatever it recorded before failing (an audit
    # record stored whose ack was lost) is recognised, not recorded a second time.
    assert flaky.ids[0] == flaky.ids[1] and flaky.redone == [False, True]


async def test_a_retry_waits_for_the_first_call_then_gives_up_with_unavailable(nats_url: str) -> None:
    bus = Bus(await nats.connect(nats_url))
    try:
        register = RequestRegister(bus, wait_s=0.3)
        await register.open()
        slow = Work(delay_s=0.6)  # under way longer than a retry waits, not long enough to be stale
        asked = request()
        first = asyncio.create_task(register.once("ann", asked, slow, Reply))
        await asyncio.sleep(0.05)
        with pytest.raises(ServiceUnavailable, match="still under way"):
            await register.once("ann", asked, slow, Reply)
        assert (await first).deleted_records == 1
        assert (await register.once("ann", asked, slow, Reply)).deleted_records == 1
        assert slow.runs == 1
    finally:
        await bus.close()


async def test_the_claim_of_a_gateway_that_died_is_taken_over(nats_url: str) -> None:
    bus = Bus(await nats.connect(nats_url))
    try:
        register = RequestRegister(bus, wait_s=0.5)
        await register.open()
        asked = request()
        # What a gateway killed mid-call leaves: a claim, no answer, claimed a while ago.
        key = hashlib.sha256(f"ann\n{asked.DESCRIPTOR.full_name}\n{asked.client_request_id}".encode()).hexdigest()
        digest = hashlib.sha256(asked.SerializeToString(deterministic=True)).hexdigest()
        dead = str(uuid.uuid4())
        entry = {"digest": digest, "claimed_at": time.time() - 60, "operation_id": dead}
        await register.bucket.create(key, json.dumps(entry).encode())
        work = Work()
        answer = await register.once("ann", asked, work, Reply)
        # Redone under the dead claimant's operation id, so what it recorded is recognised.
        assert (work.runs, answer.deleted_records, work.ids, work.redone) == (1, 1, [dead], [True])
        # A claim whose outcome can no longer be told (unrenewed past the audit stream's
        # duplicate window) is not taken over: the caller is told to ask again with a new id.
        stale = request()
        key = hashlib.sha256(f"ann\n{stale.DESCRIPTOR.full_name}\n{stale.client_request_id}".encode()).hexdigest()
        digest = hashlib.sha256(stale.SerializeToString(deterministic=True)).hexdigest()
        too_old = {"digest": digest, "claimed_at": time.time() - TAKE_OVER_WITHIN_S - 1, "operation_id": dead}
        await register.bucket.create(key, json.dumps(too_old).encode())
        with pytest.raises(PreconditionFailed, match="new client_request_id"):
            await register.once("ann", stale, work, Reply)
        assert work.runs == 1
    finally:
        await bus.close()


async def test_no_id_runs_every_time_and_a_malformed_id_is_refused(
    registers: tuple[RequestRegister, RequestRegister],
) -> None:
    work = Work()
    plain = gateway_pb2.DeleteSubjectRequest(subject_id="S-1", reason="r")
    for _ in range(2):
        await registers[0].once("ann", plain, work, Reply)
    assert work.runs == 2
    bad = request(request_id="no spaces allowed")
    with pytest.raises(InvalidInput, match="client_request_id"):
        await registers[0].once("ann", bad, work, Reply)


async def test_a_slow_first_call_keeps_its_claim_and_is_never_run_twice(nats_url: str) -> None:
    bus = Bus(await nats.connect(nats_url))
    try:
        register = RequestRegister(bus, wait_s=0.2)  # a claim unrenewed for 0.4 s would be taken over
        await register.open()
        slow = Work(delay_s=1.2)
        asked = request()
        first = asyncio.create_task(register.once("ann", asked, slow, Reply))
        await asyncio.sleep(0.7)  # well past the stale age: only the renewals keep the claim
        with pytest.raises(ServiceUnavailable, match="still under way"):
            await register.once("ann", asked, slow, Reply)
        assert (await first).deleted_records == 1
        await register.close()
        later = await register.once("ann", asked, slow, Reply)
        assert (slow.runs, later.deleted_records) == (1, 1)
    finally:
        await bus.close()


async def test_a_dead_gateways_claim_is_taken_over_in_seconds_not_after_the_clients_deadline(nats_url: str) -> None:
    """With the production wait (30 s), a claim whose gateway was killed 10 s ago is taken over at
    once. Taken to be stale only at twice the wait (60 s), a search retried on the other gateway
    waited for the dead one's claim past the client's 60 s deadline (make test-scale saw it)."""
    bus = Bus(await nats.connect(nats_url))
    try:
        register = RequestRegister(bus, wait_s=30.0)
        await register.open()
        asked = request()
        key = hashlib.sha256(f"ann\n{asked.DESCRIPTOR.full_name}\n{asked.client_request_id}".encode()).hexdigest()
        digest = hashlib.sha256(asked.SerializeToString(deterministic=True)).hexdigest()
        await register.bucket.create(key, json.dumps({"digest": digest, "claimed_at": time.time() - 10}).encode())
        work = Work()
        answer = await asyncio.wait_for(register.once("ann", asked, work, Reply), 5)
        assert (work.runs, answer.deleted_records) == (1, 1)
    finally:
        await bus.close()
