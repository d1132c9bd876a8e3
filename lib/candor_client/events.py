"""Following the event feed as an integration does: a durable JetStream consumer of its own on
the ``CANDOR_EVENTS`` stream, read at least once, replayable from a time or a sequence.

The feed (candor_audit.feed) holds ``candor.events.v1.LifecycleEvent`` messages made from the
audit chain. A follower names its durable consumer; the server remembers how far it got, so a
follower that stops and comes back (or a second copy of it) carries on where the acknowledgements
end. Events given but not acknowledged within ``ack_wait_s`` come again: a follower deduplicates
by ``record_sequence``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from candor.events.v1 import events_pb2

__all__ = ["EVENTS_PREFIX", "EVENTS_STREAM", "EventFollower", "FeedEvent", "consumer_config"]

#: The feed's stream and the prefix of its subjects (candor.events.v1.<kind>).
EVENTS_STREAM = "CANDOR_EVENTS"
EVENTS_PREFIX = "candor.events.v1"

#: How long an acknowledgement waits for the server's answer: nats-py's own one second is less
#: than a loaded NATS node can take, and a follower then stopped after acting on the event.
ACK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class FeedEvent:
    """One delivery of an event, to be acknowledged once the follower has acted on it."""

    event: events_pb2.LifecycleEvent
    #: The message's place in the feed's stream.
    stream_sequence: int
    #: Whether the feed gave this event before (to this consumer) without an acknowledgement.
    redelivered: bool
    message: Msg

    async def ack(self, timeout_s: float = ACK_TIMEOUT_S) -> None:
        """Done with it: the consumer moves past it for good. Waits up to ``timeout_s`` for the
        server to confirm; when none comes (nats.errors.TimeoutError) the event may come again."""
        await self.message.ack_sync(timeout=timeout_s)


def consumer_config(
    durable: str,
    kinds: Sequence[str] = (),
    since: dt.datetime | None = None,
    from_sequence: int = 0,
    ack_wait_s: float = 30.0,
) -> ConsumerConfig:
    """A durable pull consumer of the feed: every event from the start, or from ``since`` (a
    time) or ``from_sequence`` (a stream sequence), of the given kinds (all when none)."""
    if since is not None and from_sequence:
        raise ValueError("replay from a time or from a sequence, not both")
    subjects = [f"{EVENTS_PREFIX}.{kind}" for kind in kinds]
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_ack_pending=1000,
        deliver_policy=DeliverPolicy.ALL,
    )
    if len(subjects) == 1:
        config.filter_subject = subjects[0]
    elif subjects:
        config.filter_subjects = subjects
    if since is not None:
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = since.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    elif from_sequence:
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = from_sequence
    return config


class EventFollower:
    """Reads the feed through one durable consumer, made on first use and resumed after."""

    def __init__(self, jetstream: JetStreamContext, config: ConsumerConfig) -> None:
        self._js = jetstream
        self._config = config
        self._subscription: JetStreamContext.PullSubscription | None = None

    async def open(self) -> None:
        """Make the durable consumer if the server has none of this name, else resume it."""
        durable = self._config.durable_name
        assert durable, "a follower's consumer is durable"
        try:
            await self._js.consumer_info(EVENTS_STREAM, durable)
        except NotFoundError:
            await self._js.add_consumer(EVENTS_STREAM, self._config)
        self._subscription = await self._js.pull_subscribe_bind(consumer=durable, stream=EVENTS_STREAM)

    async def fetch(self, batch: int = 64, timeout_s: float = 5.0) -> list[FeedEvent]:
        """Up to ``batch`` events, waiting up to ``timeout_s`` for the first; [] when none came."""
        if self._subscription is None:
            await self.open()
        assert self._subscription is not None
        try:
            messages = await self._subscription.fetch(batch, timeout=timeout_s)
        except TimeoutError:
            # FetchTimeoutError and nats' TimeoutError, and the bare asyncio.TimeoutError nats-py
            # raises when the wait runs out between its no-wait and its waiting pull: all "none came".
            return []
        events = []
        for message in messages:
            event = events_pb2.LifecycleEvent()
            event.ParseFromString(message.data)
            metadata = message.metadata
            events.append(
                FeedEvent(event, metadata.sequence.stream, metadata.num_delivered > 1, message)  # type: ignore[union-attr]
            )
        return events

    async def close(self) -> None:
        """Stop pulling (the consumer stays on the server, where it left off)."""
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
