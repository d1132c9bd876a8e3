"""Score-blind review: each reviewer sees a search's candidates in an order of their own, numbered
1 to N, with no distance, since a rank and a score both bias a human comparison.

The order is a keyed permutation of the search's ranks: sorted by HMAC-SHA256 of the search, the
reviewer and the rank, under a key derived from the photo key every gateway replica shares. So
every replica shows a reviewer the same order, different reviewers see different orders, and a
reviewer cannot work the true order out from what they are shown. The true rank never leaves the
gateway; the audit records name it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from candor_kit import NotFound


class BlindOrder:
    """The permutation of a search's ranks one reviewer sees."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def order(self, search_id: str, reviewer: str, ranks: Sequence[int]) -> list[int]:
        """The true ranks in this reviewer's order: the first is what they see as candidate 1."""
        return sorted(ranks, key=lambda rank: self._tag(search_id, reviewer, rank))

    def shown_rank(self, search_id: str, reviewer: str, ranks: Sequence[int], rank: int) -> int:
        """The number this reviewer sees for the candidate at true ``rank``."""
        return self.order(search_id, reviewer, ranks).index(rank) + 1

    def true_rank(self, search_id: str, reviewer: str, ranks: Sequence[int], shown: int) -> int:
        """The true rank of the candidate this reviewer sees as number ``shown``."""
        order = self.order(search_id, reviewer, ranks)
        if not 1 <= shown <= len(order):
            raise NotFound(f"search {search_id} has no candidate {shown}")
        return order[shown - 1]

    def _tag(self, search_id: str, reviewer: str, rank: int) -> bytes:
        message = f"{search_id}\x00{reviewer}\x00{rank}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()


def blind_key(photo_key: bytes) -> bytes:
    """The blind order's key, derived from the photo key (which it reveals nothing of)."""
    return hmac.new(photo_key, b"candor: the blind order of a search's candidates", hashlib.sha256).digest()
