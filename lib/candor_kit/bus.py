"""The NATS bus: protobuf request/reply with trace propagation, and the JetStream ack policy.

Errors cross a NATS reply as two headers, ``Candor-Status`` (an ErrorCode name) and
``Candor-Message``. This module is the one place that maps domain errors to NATS outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
import structlog
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from candor_kit import metrics
from candor_kit.errors import (
    CandorError,
    ErrorCode,
    InvalidInput,
    NoAnswer,
    NotStored,
    ServiceUnavailable,
)
from candor_kit.settings import nats_servers
from candor_kit.telemetry import extract_context, inject_headers

#: Durable publish failures after which the stream surely holds nothing: no stream answered, or the
#: message never left this process.
NOT_SENT = (
    nats.js.errors.NoStreamResponseError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.MaxPayloadError,
)

#: What nats-py raises when the bus cannot answer for now (a node restarting, a stream electing a
#: new leader, the connection between servers): the call that met it is unavailable, and a retry
#: will likely succeed.
BUS_TROUBLE: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)
#: How often the client pings its server (nats-py's default is 2 minutes).
PING_INTERVAL_S = 5
#: How long closing the bus waits for replies to work in flight to go out (a pod's
#: terminationGracePeriodSeconds covers it; tests/deploy/test_kubernetes.py checks).
DRAIN_TIMEOUT_S = 10.0
#: Requests one service process handles at once on one subject (each service bounds its own
#: heavy work further: the detector's lanes, the embedder's batches, the matcher's group commit).
MAX_IN_FLIGHT = 64
STATUS_HEADER = "Candor-Status"
MESSAGE_HEADER = "Candor-Message"

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)

log = structlog.get_logger("candor.bus")
_tracer = trace.get_tracer("candor.bus")


@dataclass(frozen=True)
class NatsLogin:
    """How a client that is not a service (the command line, a test) logs in to NATS."""

    url: str
    #: The NATS user, with its password in ``password_file``; empty for a server without users.
    user: str = ""
    password_file: str = ""
    #: The user's own reply inboxes (``subjects.inbox_prefix``): its permissions allow no others.
    inbox_prefix: str = "_INBOX"

    async def connect(self, name: str) -> Bus:
        """A Bus logged in as this user."""
        return await Bus.connect(
            self.url, name, user=self.user, password_file=self.password_file, inbox_prefix=self.inbox_prefix
        )


def answering_part(subject: str) -> str:
    """The service a request subject goes to, as a person would name it ("candor.detector.v1.detect.sface":
    "detector")."""
    parts = subject.split(".")
    if len(parts) < 3 or parts[0] != "candor":
        return subject
    return "audit service" if parts[1] == "audit" else parts[1]


def keyed_message_id(key: bytes, *parts: str) -> str:
    """A stream message id (Nats-Msg-Id) for ``parts`` from the publisher holding ``key``
    (``Bus.message_key``): the same in every replica of one service, so a retried publish is
    stored once; out of reach of every other service.

    Why keyed: JetStream drops a duplicate by its message id alone, whatever the subject, and a
    publisher chooses its message ids. A service that could work out the id another service's
    message will have could store one of its own under it first, and the other's was dropped."""
    return hmac.new(key, "\n".join(parts).encode(), hashlib.sha256).hexdigest()


def message_key(secret: bytes) -> bytes:
    """The key a service's publishers derive message ids with (``Bus.message_key``), from what its
    NATS user logs in with; empty for no login."""
    return hashlib.sha256(b"candor message id\0" + secret).digest() if secret else b""


class Bus:
    """A NATS connection that speaks protobuf request/reply and JetStream publishing."""

    def __init__(self, client: Client, secret: bytes = b"") -> None:
        """``secret`` is what this connection logged in with (a password, or a credentials file's
        bytes): ``message_key`` is made from it, so only its service's processes share the key."""
        self.client = client
        #: A key only the processes logged in as this connection's user hold (every replica of
        #: one service): the message ids a publisher derives with it cannot be made by another
        #: service's user. Empty when the server takes no login, where anyone is anyone.
        self.message_key = message_key(secret)
        self.jetstream: JetStreamContext = client.jetstream()
        self._pull_subscriptions: list[JetStreamContext.PullSubscription] = []
        #: The subscriptions `serve` answers on, and the requests being handled from them.
        self._served: list[Subscription] = []
        self._handling: set[asyncio.Task[None]] = set()

    @classmethod
    async def connect(
        cls,
        url: str,
        name: str,
        *,
        creds_file: str = "",
        ca_file: str = "",
        user: str = "",
        password_file: str = "",
        inbox_prefix: str = "_INBOX",
        connect_deadline_s: float = 15.0,
    ) -> Bus:
        """Connect to NATS; fails with ServiceUnavailable if the server cannot be reached.

        ``creds_file`` is a NATS credentials file, or ``user`` with the password in ``password_file``;
        ``ca_file`` verifies a tls:// server. ``url`` may list a cluster's servers, comma-separated:
        the first that answers is used, and the client moves to another if it goes.
        """
        options: dict[str, Any] = {}
        secret = b""
        if creds_file:
            options["user_credentials"] = creds_file
            secret = await asyncio.to_thread(Path(creds_file).read_bytes)
        if user:
            options["user"] = user
            options["password"] = (await asyncio.to_thread(Path(password_file).read_text)).strip()
            secret = options["password"].encode()
        if ca_file or url.startswith("tls://"):
            options["tls"] = ssl.create_default_context(cafile=ca_file or None)
        servers = nats_servers(url)
        errors: list[str] = []

        async def remember(exc: Exception) -> None:
            errors.append(str(exc) or type(exc).__name__)
            log.warning("nats_error", error=errors[-1])

        try:
            # Once connected, reconnect forever; the first connection gets a deadline, so a wrong
            # address or certificate stops the service with the reason instead of hanging it.
            client = await asyncio.wait_for(
                nats.connect(
                    servers,
                    name=name,
                    connect_timeout=5,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    # A server that vanished without closing the connection is given up after
                    # 3 pings 5 s apart go unanswered, and the client moves to another of the list.
                    ping_interval=PING_INTERVAL_S,
                    max_outstanding_pings=3,
                    allow_reconnect=True,
                    error_cb=remember,
                    inbox_prefix=inbox_prefix,
                    **options,
                ),
                timeout=connect_deadline_s,
            )
        except Exception as exc:  # nats raises several unrelated types here
            reason = errors[-1] if errors else (str(exc) or type(exc).__name__)
            raise ServiceUnavailable(f"cannot connect to NATS at {url}: {reason}") from exc
        return cls(client, secret)

    @property
    def max_payload(self) -> int:
        """The server's payload limit for one message."""
        return self.client.max_payload

    async def request(
        self,
        subject: str,
        request: Message,
        response_type: type[Resp],
        timeout: float,
        hedge_after: float = 0.0,
    ) -> Resp:
        """Send a request and decode the reply, raising the domain error the responder sent.

        With ``hedge_after`` (for requests that change nothing, such as a detection), a request
        unanswered after that many seconds is sent once more and the first reply taken: a queue
        group gives each request to one replica at random, and a request given to a replica that
        then stopped answering is otherwise lost until ``timeout``.
        """
        payload = request.SerializeToString()
        with _tracer.start_as_current_span(f"{subject} request", kind=SpanKind.CLIENT) as span:
            span.set_attribute("messaging.system", "nats")
            span.set_attribute("messaging.destination.name", subject)
            if len(payload) > self.max_payload:
                raise InvalidInput(f"message of {len(payload)} bytes exceeds the bus limit of {self.max_payload}")
            try:
                reply = await self._exchange(subject, payload, timeout, hedge_after)
            except NoRespondersError as exc:
                raise ServiceUnavailable(f"no service is answering on {subject}") from exc
            except NatsTimeoutError as exc:
                # The caller's own deadline has not passed; a part that did not answer (paused,
                # overloaded, or its request lost with a NATS node) is unavailable, and a retry may
                # find it or another replica answering.
                raise NoAnswer(f"the {answering_part(subject)} did not answer within {timeout:g} s; try again") from exc
            headers = reply.headers or {}
            status = headers.get(STATUS_HEADER)
            if status:
                span.set_status(Status(StatusCode.ERROR, status))
                raise CandorError.from_code(ErrorCode(status), headers.get(MESSAGE_HEADER, ""))
            response = response_type()
            response.ParseFromString(reply.data)
            return response

    async def _exchange(self, subject: str, payload: bytes, timeout: float, hedge_after: float) -> Msg:
        """The first reply to one request, asked again once after ``hedge_after`` (when set) without one."""
        headers = inject_headers()
        if not 0 < hedge_after < timeout:
            return await self.client.request(subject, payload, timeout=timeout, headers=headers)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        asked = [asyncio.ensure_future(self.client.request(subject, payload, timeout=timeout, headers=headers))]
        try:
            done, _ = await asyncio.wait(asked, timeout=hedge_after)
            if done:
                return asked[0].result()
            metrics.NATS_HEDGED.labels(subject).inc()
            asked.append(
                asyncio.ensure_future(
                    self.client.request(subject, payload, timeout=deadline - loop.time(), headers=headers)
                )
            )
            pending = set(asked)
            failure: BaseException | None = None
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is None:
                        return task.result()
                    failure = task.exception()
            assert failure is not None
            raise failure
        finally:
            for task in asked:
                task.cancel()

    async def serve(
        self,
        subject: str,
        queue: str,
        request_type: type[Req],
        handler: Callable[[Req], Awaitable[Message]],
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        """Answer requests on a subject, in a queue group so replicas share the load.

        Requests are handled side by side, up to ``max_in_flight`` at once; beyond that the
        subscription waits (its messages stay in nats-py's pending queue, bounded as before). nats-py
        calls a subscription's callback one message at a time, so the callback only starts the
        handling: awaited there, every request waited for the one before it, and the detector's
        lanes, the embedder's batches and the matcher's group commit never saw two at once."""
        slots = asyncio.Semaphore(max_in_flight)

        async def on_message(msg: Msg) -> None:
            await slots.acquire()
            task = asyncio.create_task(self._answer(subject, msg, request_type, handler))
            self._handling.add(task)

            def done(finished: asyncio.Task[None]) -> None:
                self._handling.discard(finished)
                slots.release()
                if not finished.cancelled() and finished.exception() is not None:
                    # The reply itself could not be sent (the connection closing, say): the caller
                    # times out and asks again; said here rather than left to asyncio's warning.
                    log.warning("reply_not_sent", subject=subject, error=str(finished.exception()))

            task.add_done_callback(done)

        self._served.append(await self.client.subscribe(subject, queue=queue, cb=on_message))
        await self.settle()

    async def _answer(
        self, subject: str, msg: Msg, request_type: type[Req], handler: Callable[[Req], Awaitable[Message]]
    ) -> None:
        """Handle one request and reply: the answer, or the domain error (INTERNAL for a defect)."""
        parent = extract_context(msg.headers)
        started = time.perf_counter()
        code = "OK"
        with _tracer.start_as_current_span(f"{subject} process", context=parent, kind=SpanKind.SERVER) as span:
            span.set_attribute("messaging.system", "nats")
            span.set_attribute("messaging.destination.name", subject)
            try:
                request = request_type()
                try:
                    request.ParseFromString(msg.data)
                except DecodeError as exc:
                    raise InvalidInput(f"malformed {request_type.__name__}") from exc
                response = await handler(request)
                await self.client.publish(msg.reply, response.SerializeToString())
            except CandorError as exc:
                code = exc.code.value
                span.set_status(Status(StatusCode.ERROR, exc.code.value))
                await self._reply_error(msg, exc.code, exc.message)
            except Exception:
                code = ErrorCode.INTERNAL.value
                log.exception("request_failed", subject=subject)
                span.set_status(Status(StatusCode.ERROR, "INTERNAL"))
                await self._reply_error(msg, ErrorCode.INTERNAL, "internal error")
            finally:
                metrics.NATS_HANDLED.labels(subject, code).inc()
                metrics.NATS_SECONDS.labels(subject).observe(time.perf_counter() - started)

    async def settle(self) -> None:
        """Return once the server has processed every command sent so far (a subscription above
        all), so "SERVING" never precedes "reachable"."""
        await round_trip(self.client)

    async def _reply_error(self, msg: Msg, code: ErrorCode, message: str) -> None:
        if msg.reply:
            headers = {STATUS_HEADER: code.value, MESSAGE_HEADER: message[:500]}
            await self.client.publish(msg.reply, b"", headers=headers)

    async def publish_durable(self, subject: str, message: Message, *, msg_id: str) -> tuple[int, bool]:
        """Publish to a JetStream stream and wait for the server's ack; returns the stream sequence
        and whether the stream already held a message with this ``msg_id`` (Nats-Msg-Id, within
        its duplicate window): then it is stored once, and the sequence is the first one's.
        """
        with _tracer.start_as_current_span(f"{subject} publish", kind=SpanKind.PRODUCER) as span:
            span.set_attribute("messaging.system", "nats")
            span.set_attribute("messaging.destination.name", subject)
            headers = inject_headers()
            headers["Nats-Msg-Id"] = msg_id
            try:
                ack = await self.jetstream.publish(subject, message.SerializeToString(), timeout=5, headers=headers)
            except Exception as exc:  # the JetStream client raises several unrelated types
                # After a timeout the stream may hold the message (its ack lost); after these, not.
                failure = NotStored if isinstance(exc, NOT_SENT) else ServiceUnavailable
                raise failure(f"could not store {subject} durably: {exc}") from exc
            return int(ack.seq), bool(ack.duplicate)

    async def pull_subscribe(
        self, subject: str, *, durable: str, stream: str, config: ConsumerConfig
    ) -> JetStreamContext.PullSubscription:
        """A pull subscription to a durable JetStream consumer, which ``close`` lets go first."""
        subscription = await self.jetstream.pull_subscribe(subject, durable=durable, stream=stream, config=config)
        self._pull_subscriptions.append(subscription)
        return subscription

    async def close(self) -> None:
        """Drain the connection: stop taking requests, finish in-flight ones, flush, close.

        Pull subscriptions are let go before the drain: nats-py's drain waits for a pull
        subscription's queue, which a cancelled or finished fetch leaves unjoined, until the drain's
        timeout (every worker service took 11 s to stop). Their durable consumers stay on the
        server; a message fetched but not yet acknowledged is delivered again after its ack wait.
        """
        for subscription in self._pull_subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self._pull_subscriptions.clear()
        if not self.client.is_closed:
            try:
                # One deadline for all of it, which a pod's grace period covers: a handler that
                # never ends must not hold the stop.
                await asyncio.wait_for(self._drain(), timeout=DRAIN_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - whatever stopped the drain, the connection must close
                await self.client.close()

    async def _drain(self) -> None:
        """Take no new request, answer those taken, then drain the connection (whose own drain
        waits only for the subscriptions' callbacks, which start the handling of a request)."""
        for served in self._served:
            with contextlib.suppress(Exception):
                await served.drain()
        self._served.clear()
        if self._handling:
            await asyncio.wait(set(self._handling))
        await self.client.drain()


async def fetch_batch(
    subscription: JetStreamContext.PullSubscription, batch: int, timeout: float, consumer: str = ""
) -> list[Msg]:
    """Up to ``batch`` messages from a pull subscription; [] when none came within ``timeout``.

    nats-py signals an empty pull with its own TimeoutError or asyncio's, depending on where the
    wait ran out: both mean "nothing yet" to every consumer loop of the project. With a durable
    ``consumer`` named, its backlog (the last message's count of those still waiting behind it, 0
    after an empty pull) goes to the ``candor_jetstream_consumer_pending`` gauge.
    """
    try:
        messages = await subscription.fetch(batch, timeout=timeout)
    except (NatsTimeoutError, TimeoutError):
        messages = []
    if consumer:
        last = messages[-1].metadata if messages else None
        metrics.CONSUMER_PENDING.labels(consumer).set(last.num_pending if last is not None else 0)
    return messages


async def round_trip(client: Client) -> None:
    """Return once the server has read every command ``client`` has sent so far.

    nats-py's flush() alone does not promise that: it writes its PING straight to the socket
    while a SUB or PUB may still wait in the client's pending buffer for the flusher task, and the
    PONG can then come back before the server has seen it (1 request in 10 found no responder
    right after serve() on a fresh TLS server; 26 subscriptions in 300 had their refusal arrive
    after flush() returned). So the pending buffer is written out first, then the PING round trip
    proves the server has read past it, and any refusal it sent has reached the error callback.
    """
    await client._flush_pending(force_flush=True)
    await client.flush()


#: A handler's outcome for one message: None when it is done, or the exception saying why not.
Outcome = Exception | None


async def settle_batch(
    messages: Sequence[Msg],
    handle: Callable[[Sequence[Msg]], Awaitable[list[Outcome]]],
    dead_letter: str,
    bus: Bus,
) -> None:
    """Run a JetStream handler over a fetched batch and settle each message by its own outcome:
    the ack policy of the audit consumer, which appends a batch in one transaction.

    (Import work settles through `candor_kit.ingest.Worker` instead: its dead letters must also
    record the photo's result and an audit event, and it retries only ``max_deliver`` times.)

    The handler returns one outcome per message; if it raises, every message of the batch gets its
    error. Success acks. Any other failure naks with a delay that grows with each delivery, so the
    message comes back later. A poison message (one that cannot be decoded, or is rejected as
    invalid) is terminated and copied to the dead-letter subject. Each message has its own consumer
    span, a child of its publisher's.
    """
    if not messages:
        return
    spans = [
        _tracer.start_span(f"{msg.subject} process", context=extract_context(msg.headers), kind=SpanKind.CONSUMER)
        for msg in messages
    ]
    try:
        try:
            outcomes = await handle(messages)
            if len(outcomes) != len(messages):
                raise RuntimeError(f"a handler gave {len(outcomes)} outcomes for {len(messages)} messages")
        except Exception as exc:  # noqa: BLE001 - unknown failures are retried, never dropped
            outcomes = [exc] * len(messages)
        for msg, span, outcome in zip(messages, spans, outcomes, strict=True):
            if outcome is not None:
                span.set_status(Status(StatusCode.ERROR, str(outcome)[:200]))
            with trace.use_span(span, end_on_exit=True):
                await _settle(msg, outcome, dead_letter, bus)
    finally:
        for span in spans:
            if span.is_recording():  # a settle above failed (the connection lost): end the rest
                span.end()


async def _settle(msg: Msg, outcome: Outcome, dead_letter: str, bus: Bus) -> None:
    """Ack, nak with a growing delay, or terminate and dead-letter one message by its outcome."""
    if outcome is None:
        await msg.ack()
    elif isinstance(outcome, InvalidInput | DecodeError):
        log.error("message_poisoned", subject=msg.subject, reason=str(outcome))
        headers = {"Candor-Original-Subject": msg.subject, MESSAGE_HEADER: str(outcome)[:500]}
        await bus.client.publish(dead_letter, msg.data, headers=headers)
        await msg.term()
    else:
        delivered = msg.metadata.num_delivered if msg.metadata else 1
        delay = min(30.0, 0.5 * 2 ** min(delivered, 6))
        log.warning("message_retry", subject=msg.subject, delivered=delivered, delay_s=delay, error=str(outcome))
        await msg.nak(delay=delay)


#: Messages a stream read asks the server for at a time.
READ_BATCH = 500


@dataclass(frozen=True)
class OneRead:
    """A pull subscription made for one read, and what was waiting for it when it was made."""

    subscription: JetStreamContext.PullSubscription
    #: Messages waiting for the consumer as it was made (0: nothing to fetch).
    pending: int


@contextlib.asynccontextmanager
async def one_read_consumer(
    jetstream: JetStreamContext, stream: str, subject: str, config: ConsumerConfig
) -> AsyncIterator[OneRead]:
    """A pull subscription of ``subject`` through a consumer of ``stream`` made for one read, and
    deleted when the read ends. nats-server keeps at most 1000 consumers on a stream, and one merely
    unsubscribed stays until its ``inactive_threshold`` has passed: reads faster than 1000 in that
    time would be refused. The threshold stays in ``config``, for a delete that never comes (the
    process killed). The user needs ``$JS.API.CONSUMER.DELETE`` on the stream."""
    name = f"read-{uuid.uuid4().hex}"
    made = await jetstream.add_consumer(stream, config=dataclasses.replace(config, name=name, filter_subject=subject))
    try:
        subscription = await jetstream.pull_subscribe_bind(consumer=name, stream=stream)
        try:
            # The server's answer to the creation says what waits: no second round trip to ask.
            yield OneRead(subscription, made.num_pending or 0)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
    finally:
        with contextlib.suppress(Exception):  # left to expire, as before, when it cannot be deleted now
            await jetstream.delete_consumer(stream, name)


async def read_stream(
    jetstream: JetStreamContext, stream: str, subject: str, *, first: int = 1, last: int | None = None
) -> AsyncIterator[Msg]:
    """Every message of ``stream`` on ``subject`` from stream sequence ``first`` through ``last``
    (the stream's end when None), in order, through a consumer made for the read that acknowledges
    nothing and is deleted when the read ends (``one_read_consumer``)."""
    info = await jetstream.stream_info(stream)
    end = info.state.last_seq if last is None else min(last, info.state.last_seq)
    if end < max(first, info.state.first_seq):
        return
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=max(first, 1),
        ack_policy=AckPolicy.NONE,
        inactive_threshold=30.0,
        mem_storage=True,
    )
    async with one_read_consumer(jetstream, stream, subject, config) as read:
        if not read.pending:
            return
        while True:
            try:
                messages = await read.subscription.fetch(READ_BATCH, timeout=2)
            except (TimeoutError, NatsTimeoutError):
                return  # what was below ``end`` at the start is gone (a limit removed it)
            for msg in messages:
                assert msg.metadata is not None
                if msg.metadata.sequence.stream > end:
                    return
                yield msg
                if msg.metadata.sequence.stream == end or msg.metadata.num_pending == 0:
                    return
