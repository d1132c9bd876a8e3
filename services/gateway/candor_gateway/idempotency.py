"""Idempotent calls: a client's request id makes a retried Search, Enroll, DeleteSubject or
SeedProficiencyTest return the first call's answer instead of doing the work (and writing its audit
records) again.

Every gateway replica shares one register, the REQUESTS_BUCKET key-value bucket. A call with an id
first *claims* its key with a create, which NATS grants to exactly one caller however many race, on
however many replicas; the claim holds a digest of the request. The claimant does the work and
stores its answer (or its refusal) under the key. Any other call with the id then:

- with another request (another digest): is refused, FAILED_PRECONDITION;
- once the answer is stored: gets it, or the same refusal, and nothing runs;
- while the first call is under way: waits for its answer, up to the call's deadline (then
  UNAVAILABLE: retry).

A first call that fails for a reason a retry may not meet (UNAVAILABLE, DEADLINE_EXCEEDED,
RESOURCE_EXHAUSTED, INTERNAL), or is cancelled, gives its claim back, so the retry runs: at once,
under the first call's operation id (below), since the failure may have come after the work was
done and recorded (an audit record stored whose ack was lost). The claimant renews its
claim every RENEW_S (2 s) while the work runs, however long; a claim left unrenewed for
STALE_AFTER_S (8 s: its gateway died before it stored an answer) is taken over and the work runs
again *under the same operation id*, a random id the first claimant chose and wrote in its claim
(a search's id). So a search the dead gateway had already recorded is recognised when its record is
stored again (the audit stream keeps an event id once, and says so) and answered from that record,
not recorded twice (make test-scale saw a gateway killed between its record and its answer make a
second search). The audit stream tells a repeated id only within its duplicate window (120 s), so a
claim unrenewed for longer than TAKE_OVER_WITHIN_S (100 s), or given back that long ago, is not
taken over: the caller is told to ask again with a new id. The ids are never derived from the
client's: an id reused after its entry expired gets a new operation id, so a new search always has
a record of its own.

Keys are SHA-256 of caller, call and id, so one caller's ids neither reach nor reveal another's;
entries expire after ``keep_s``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from google.protobuf.message import Message
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from candor_kit import Bus, CandorError, InvalidInput, PreconditionFailed, ServiceUnavailable
from candor_kit.errors import ErrorCode
from candor_kit.jetstream_setup import open_bucket
from candor_kit.kv_entries import reach
from candor_kit.subjects import REQUESTS_BUCKET

Reply = TypeVar("Reply", bound=Message)

CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: How long an answer is kept for retries.
KEEP_S = 24 * 3600.0
#: How often a claimant renews its claim while the work runs, and how long a claim may go
#: unrenewed before a retry takes it for a dead gateway's (four renewals missed).
RENEW_S = 2.0
STALE_AFTER_S = 8.0
#: A dead claimant's claim is taken over (its work redone under its operation id) only within this
#: long of its last renewal: inside the audit stream's duplicate window (120 s), so a record the
#: dead claimant stored is recognised. Later, the outcome cannot be told and the call is refused.
TAKE_OVER_WITHIN_S = 100.0
#: Failures a retry may not meet: the claim is given back so the retry runs.
RETRYABLE = {
    ErrorCode.UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED,
    ErrorCode.RESOURCE_EXHAUSTED,
    ErrorCode.INTERNAL,
}
#: How often a retry looks for the answer of a first call still under way.
POLL_S = 0.05
#: What a call answers when the register's stream did not answer for as long as ``reach`` tries.
REGISTER_UNREACHABLE = "the request register cannot be reached"


def check_client_request_id(value: str) -> str:
    """A client request id: 1 to 128 of A-Z, a-z, 0-9, '.', '_', ':' and '-'."""
    if not CLIENT_REQUEST_ID.match(value):
        raise InvalidInput("client_request_id must be 1 to 128 of A-Z, a-z, 0-9, '.', '_', ':' and '-'")
    return value


@dataclass(frozen=True)
class _Entry:
    """What the register holds under a key."""

    digest: str
    claimed_at: float
    answer: str = ""  # the stored reply, base64 of its bytes
    error_code: str = ""
    error_message: str = ""
    #: The id the work runs under (a search's id), chosen by the first claimant and kept by a
    #: call that takes its claim over, so work redone after a gateway died has the same id.
    operation_id: str = ""

    @property
    def settled(self) -> bool:
        return bool(self.answer or self.error_code)

    def encode(self) -> bytes:
        return json.dumps(self.__dict__, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> _Entry:
        return cls(**json.loads(raw or b"{}"))


@dataclass(frozen=True)
class Operation:
    """What a call's work runs as: its id (a search's id), and whether an earlier run under that id
    may have done part of the work (it failed, or its gateway died, before storing an answer), so
    that what the matcher finds done already may be this operation's own doing."""

    id: str
    redone: bool = False


class RequestRegister:
    """The shared register of client request ids (REQUESTS_BUCKET)."""

    def __init__(self, bus: Bus, wait_s: float, replicas: int = 1, keep_s: float = KEEP_S) -> None:
        """``wait_s``: how long a retry waits for a first call still under way. The claimant renews
        its claim every RENEW_S (more often when ``wait_s`` is shorter); one unrenewed for
        STALE_AFTER_S is taken to be a dead gateway's. Both are short and apart from ``wait_s``: a
        retry must take over a killed gateway's claim well within the client's own deadline."""
        self._bus = bus
        self._wait_s = wait_s
        self._renew_s = min(RENEW_S, wait_s / 2)
        self._replicas = replicas
        self._keep_s = keep_s
        self._bucket: KeyValue | None = None
        self._settling: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        """Create the register when missing."""
        self._bucket = await open_bucket(self._bus, REQUESTS_BUCKET, self._replicas, ttl=self._keep_s)

    async def close(self) -> None:
        """Store the answers still being stored (at shutdown)."""
        await asyncio.gather(*self._settling, return_exceptions=True)

    @property
    def bucket(self) -> KeyValue:
        """The register's bucket."""
        if self._bucket is None:
            raise RuntimeError("RequestRegister.open() was not awaited")
        return self._bucket

    async def once(
        self, user: str, request: Message, work: Callable[[Operation], Awaitable[Reply]], reply_type: type[Reply]
    ) -> Reply:
        """``work(operation)``'s answer, run at most once for this caller, this kind of request and
        its ``client_request_id`` field (empty: run, under a new id)."""
        client_request_id = str(getattr(request, "client_request_id", ""))
        if not client_request_id:
            return await work(Operation(str(uuid.uuid4())))
        check_client_request_id(client_request_id)
        call = request.DESCRIPTOR.full_name
        key = hashlib.sha256(f"{user}\n{call}\n{client_request_id}".encode()).hexdigest()
        digest = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
        deadline = time.monotonic() + self._wait_s
        while True:
            claim = await self._claim(key, _Entry(digest, time.time(), operation_id=str(uuid.uuid4())))
            if claim is not None:
                return await self._run(key, claim, work, redone=False)
            entry, revision = await self._read(key)
            if entry is None:  # expired meanwhile: claim it again
                continue
            if entry.digest != digest:
                raise PreconditionFailed(
                    "this client_request_id was used for a different request; use a new id for a new request"
                )
            if entry.settled:
                return self._answer(entry, reply_type)
            unrenewed_s = time.time() - entry.claimed_at
            if unrenewed_s > STALE_AFTER_S:
                if unrenewed_s > TAKE_OVER_WITHIN_S:
                    raise PreconditionFailed(
                        "the first call with this client_request_id did not finish, too long ago to tell "
                        "what it did; make the request again with a new client_request_id"
                    )
                # The same operation id: work the dead claimant had already recorded is recognised
                # as such (the audit stream stores an event id once) instead of done a second time.
                taken = replace(entry, claimed_at=time.time(), operation_id=entry.operation_id or str(uuid.uuid4()))
                claim = await self._take_over(key, revision, taken)
                if claim is not None:
                    return await self._run(key, claim, work, redone=True)
                continue
            if time.monotonic() > deadline:
                raise ServiceUnavailable("the first call with this client_request_id is still under way; retry shortly")
            await asyncio.sleep(POLL_S)

    async def _claim(self, key: str, entry: _Entry) -> _Claim | None:
        """The claim, or None when another call holds the key."""
        return await self._write(key, entry, lambda: self.bucket.create(key, entry.encode()))

    async def _take_over(self, key: str, revision: int, entry: _Entry) -> _Claim | None:
        """Claim a key whose holder died; None when another call took it first."""
        return await self._write(key, entry, lambda: self.bucket.update(key, entry.encode(), last=revision))

    async def _write(self, key: str, entry: _Entry, write: Callable[[], Awaitable[int]]) -> _Claim | None:
        """``entry`` written by ``write`` as this call's claim, or None when the key moved on under
        another call. A write tried again after its answer was lost may have been stored the first
        time: the key then holds this very entry, and the claim is this call's."""
        tries = 0

        async def attempt() -> int:
            nonlocal tries
            tries += 1
            return await write()

        try:
            return _Claim(await reach(attempt, REGISTER_UNREACHABLE), entry)
        except KeyWrongLastSequenceError:
            if tries > 1:
                found, revision = await self._read(key)
                if found == entry:
                    return _Claim(revision, entry)
            return None

    async def _read(self, key: str) -> tuple[_Entry | None, int]:
        try:
            found = await reach(lambda: self.bucket.get(key), REGISTER_UNREACHABLE)
        except KeyNotFoundError:
            return None, 0
        return _Entry.decode(found.value), int(found.revision or 0)

    async def _run(
        self, key: str, claim: _Claim, work: Callable[[Operation], Awaitable[Reply]], *, redone: bool
    ) -> Reply:
        """Do the work under the claim, renewing it while the work lasts, and store how it ended; a
        failure a retry may not meet gives the claim back."""
        renewing = asyncio.create_task(self._renew(key, claim))
        try:
            reply = await work(Operation(claim.entry.operation_id, redone))
        except CandorError as error:
            revision = await claim.stop(renewing)
            if error.code in RETRYABLE:
                await self._give_back(key, claim, revision)
            else:
                refused = claim.now(error_code=error.code.name, error_message=error.message)
                await self._settle(key, revision, refused)
            raise
        except BaseException:
            await self._give_back(key, claim, await claim.stop(renewing))
            raise
        revision = await claim.stop(renewing)
        answer = base64.b64encode(reply.SerializeToString()).decode()
        # Stored beside the reply, not before it: a retry arriving first waits for it.
        settling = asyncio.create_task(self._settle(key, revision, claim.now(answer=answer)))
        self._settling.add(settling)
        settling.add_done_callback(self._settling.discard)
        return reply

    async def _renew(self, key: str, claim: _Claim) -> None:
        """Keep the claim fresh while its work runs, so a slow first call is never taken for a dead
        gateway's (only a claim left unrenewed for STALE_AFTER_S is taken over)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(claim.done.wait(), self._renew_s)
            if claim.done.is_set():  # between renewals: the revision is the last one written
                return
            try:
                claim.revision = await self.bucket.update(key, claim.now().encode(), last=claim.revision)
            except KeyWrongLastSequenceError:
                return  # taken over after all (this gateway stalled): the other call settles it
            except Exception:  # noqa: BLE001 - try again at the next renewal
                continue

    async def _settle(self, key: str, revision: int, entry: _Entry) -> None:
        """Store the outcome under our claim. The work is done either way: if the register cannot
        take it, a retry after the claim goes stale runs the work again under the same ids."""
        try:
            await self.bucket.update(key, entry.encode(), last=revision)
        except Exception:  # noqa: BLE001 - the caller still gets its answer
            pass

    async def _give_back(self, key: str, claim: _Claim, revision: int) -> None:
        """Leave the claim for a retry to take over at once and redo the work *under its operation
        id* (a deleted claim would give the retry a new one): work the failed run did and recorded
        before it failed (a record stored whose ack was lost, an expunge done before its record
        could be stored) is then recognised by its record, not done and recorded a second time."""
        given_back = replace(claim.entry, claimed_at=time.time() - STALE_AFTER_S - 1)
        try:
            await self.bucket.update(key, given_back.encode(), last=revision)
        except Exception:  # noqa: BLE001 - the claim then goes stale and is taken over
            pass

    @staticmethod
    def _answer(entry: _Entry, reply_type: type[Reply]) -> Reply:
        if entry.error_code:
            raise CandorError.from_code(ErrorCode[entry.error_code], entry.error_message)
        reply = reply_type()
        reply.ParseFromString(base64.b64decode(entry.answer))
        return reply


class _Claim:
    """A claim being worked under: its latest revision, its entry, and the signal to stop renewing it."""

    def __init__(self, revision: int, entry: _Entry) -> None:
        self.revision = revision
        self.entry = entry
        self.done = asyncio.Event()

    def now(self, **outcome: str) -> _Entry:
        """The claim's entry as of now, with ``outcome`` (an answer or a refusal) when given."""
        return replace(self.entry, claimed_at=time.time(), **outcome)

    async def stop(self, renewing: asyncio.Task[None]) -> int:
        """Stop renewing (a renewal under way is let finish, so its revision is known); the latest
        revision."""
        self.done.set()
        await renewing
        return self.revision
