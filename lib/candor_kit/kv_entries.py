"""Changing one key-value entry by compare-and-set, the way every shared count, register and
record in Candor is changed: read it with its revision, work out the new value, write it only if
the entry is still at that revision (create it when there was none), and read again when another
writer, in this process or another replica, got there first.

Several callers used to hold a loop of their own (the gallery's model record, the daily search
count, the import register's claim and take-back); the one here is what they share.

And reaching a bucket while its stream elects a leader: a NATS node of three that dies leaves the
streams it led without a leader for a second or two, and every read and write meanwhile fails
("no response from stream"). ``reach`` tries such a call again for a few seconds, for the entries a
call cannot do without (the request register's claim, the revoked tokens every call checks).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from candor_kit.bus import BUS_TROUBLE
from candor_kit.errors import ServiceUnavailable

R = TypeVar("R")
T = TypeVar("T")

log = structlog.get_logger("candor.kv")

#: How long ``reach`` tries a call again while its bucket's stream does not answer: a leader
#: election after a NATS node died takes a second or two.
REACH_WITHIN_S = 5.0
#: The first pause between tries; each pause doubles.
REACH_PAUSE_S = 0.2

#: An edit of the entry's value (None: there is none): the value to write (None: leave the entry
#: as it is) and what the change answers.
Edit = Callable[[bytes | None], tuple[bytes | None, R]]


class KeptChanging(ServiceUnavailable):
    """Every try lost its race with another writer; the caller may try again later."""


async def change_entry(bucket: KeyValue, key: str, edit: Edit[R], *, tries: int, contended: str) -> tuple[R, int]:
    """Apply ``edit`` to the entry under ``key`` by compare-and-set, reading again after a lost
    race, at most ``tries`` times. Returns the edit's answer and the entry's revision (the one
    written, or the one read when the edit left it alone). KeptChanging (its message
    ``contended``) when every try lost; a failure of the bucket itself, or the edit's own error,
    goes to the caller."""
    for _ in range(tries):
        try:
            entry = await bucket.get(key)
        except KeyNotFoundError:  # never written, deleted or purged
            value, revision = None, 0
        else:
            value, revision = entry.value, int(entry.revision or 0)
        new, answer = edit(value)
        if new is None:
            return answer, revision
        try:
            if revision:
                written = await bucket.update(key, new, last=revision)
            else:
                written = await bucket.create(key, new)
        except KeyWrongLastSequenceError:  # another writer first, or a create racing a create
            continue
        return answer, int(written)
    raise KeptChanging(contended)


async def reach(call: Callable[[], Awaitable[T]], unreachable: str) -> T:
    """``call()`` on a key-value bucket, tried again for up to REACH_WITHIN_S while the bucket's
    stream does not answer (BUS_TROUBLE: a leader election, a node restarting), each retry logged;
    after that ServiceUnavailable, its message ``unreachable`` and the last failure. The bucket's
    own answers (a key taken, a key missing) and any other error go to the caller at once.

    A write tried again may have been stored the first time with its answer lost (a timeout): a
    ``put`` is then simply stored twice, a ``create`` or ``update`` meets its own entry, which the
    caller must recognise (as the request register does)."""
    deadline = time.monotonic() + REACH_WITHIN_S
    pause = REACH_PAUSE_S
    while True:
        try:
            return await call()
        except BUS_TROUBLE as exc:
            if time.monotonic() + pause > deadline:
                raise ServiceUnavailable(f"{unreachable}: {exc}") from exc
            log.warning("key_value_retried", unreachable=unreachable, error=str(exc) or type(exc).__name__)
            await asyncio.sleep(pause)
            pause *= 2
