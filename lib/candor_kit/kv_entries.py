"""Changing one key-value entry by compare-and-set, the way every shared count, register and
record in Candor is changed: read it with its revision, work out the new value, write it only if
the entry is still at that revision (create it when there was none), and read again when another
writer, in this process or another replica, got there first.

Several callers used to hold a loop of their own (the gallery's model record, the daily search
count, the import register's claim and take-back); the one here is what they share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from candor_kit.errors import ServiceUnavailable

R = TypeVar("R")

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
