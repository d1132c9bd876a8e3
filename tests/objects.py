"""What the tests ask of a JetStream object store directly, beside the services' own view."""

from __future__ import annotations

from nats.js.errors import NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore


async def object_stored(bucket: ObjectStore, name: str) -> bool:
    """Whether an object of that name is stored (not deleted), whatever its header says."""
    try:
        await bucket.get_info(name)  # a deleted object's info is refused as not found
    except (ObjectNotFoundError, NotFoundError):
        return False
    return True
