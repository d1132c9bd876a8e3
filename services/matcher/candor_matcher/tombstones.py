"""Tombstones of expunged subjects and records, so queued import work cannot bring them back.

A deletion takes effect in the gallery at once, but photos of the same subject may still wait in
the import queue. The matcher notes when each subject and record was expunged (in a JetStream
key-value bucket that every matcher replica shares), and an import that started before that
moment does not enrol them; a later import may.
"""

from __future__ import annotations

import hashlib
import time

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue


def _key(kind: str, value: str) -> str:
    # Subject ids may hold characters a bucket key may not: key by their hash.
    return f"{kind}.{hashlib.sha256(value.encode('utf-8')).hexdigest()}"


class Tombstones:
    """When subjects and records were expunged."""

    def __init__(self, bucket: KeyValue) -> None:
        self._bucket = bucket

    async def mark_subject(self, subject_id: str) -> None:
        """Note that every record of a subject was expunged now."""
        await self._bucket.put(_key("subject", subject_id), str(time.time_ns()).encode())

    async def mark_record(self, record_id: str) -> None:
        """Note that one record was expunged now."""
        await self._bucket.put(_key("record", record_id), str(time.time_ns()).encode())

    async def expunged_since(self, subject_id: str, record_id: str, since: Timestamp) -> str:
        """Why a photo queued by an import that started at ``since`` must not be enrolled, or ""."""
        started = since.ToNanoseconds()
        for kind, value in (("subject", subject_id), ("record", record_id)):
            try:
                entry = await self._bucket.get(_key(kind, value))
            except KeyNotFoundError:
                continue
            if int((entry.value or b"0").decode()) >= started:
                return f"the {kind} was expunged after this import started"
        return ""
