"""`candor events relay`: the event feed to HTTPS webhooks, for systems that cannot speak NATS.

Each endpoint of the endpoints file gets a durable consumer of its own on the feed
(``webhook-<name>``), so endpoints never hold each other up and a restarted relay carries on where
each one left off. Events reach an endpoint one at a time, in feed order, as a JSON POST signed
with the endpoint's own secret (HMAC-SHA256 over ``<timestamp>.<body>``, candor_client.webhooks
checks it). A 2xx answer settles the event. A network error, a timeout, a 5xx, 408 or 429 is
tried again after a growing pause (the feed redelivers it); any other 4xx, or the last attempt,
puts the event on the dead-letter stream (``candor events dead-letters`` lists them) and moves on.
Every outcome is counted (``candor_webhook_deliveries_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import httpx
import structlog
import yaml
from google.protobuf.json_format import MessageToDict
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from candor_client.events import EventFollower, FeedEvent
from candor_client.webhooks import sign
from candor_kit import metrics
from candor_kit.bus import NatsLogin
from candor_kit.jetstream_setup import ensure_stream
from candor_kit.settings import is_loopback
from candor_kit.subjects import EVENTS_PREFIX, WEBHOOKS_DEAD_PREFIX, WEBHOOKS_DEAD_STREAM

log = structlog.get_logger("candor.webhooks")

#: The pauses before each further attempt (the last one repeats): about 3 h in all.
DEFAULT_BACKOFF_S = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)
#: Answers worth trying again: the endpoint is busy or briefly away.
RETRIED_STATUSES = frozenset({408, 429})
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


class Endpoint(BaseModel):
    """One webhook endpoint of the endpoints file."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(description="1 to 32 of a-z, 0-9 and -: names its consumer and metrics")]
    url: str
    secret_file: Path
    kinds: list[str] = Field(default_factory=list)
    #: Plain http to a host other than this machine: only behind a mesh that encrypts.
    allow_plaintext: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not NAME.match(name):
            raise ValueError("a name is 1 to 32 of a-z, 0-9 and -, starting with a letter or digit")
        return name


class EndpointsFile(BaseModel):
    """The endpoints file: ``endpoints: [{name, url, secret_file, kinds, allow_plaintext}]``."""

    model_config = ConfigDict(extra="forbid")

    endpoints: list[Endpoint] = Field(min_length=1)
    max_attempts: int = Field(default=8, ge=1, le=100)
    timeout_s: float = Field(default=10.0, gt=0, le=120)


@dataclass(frozen=True)
class Target:
    """An endpoint ready to deliver to: its settings and its secret."""

    endpoint: Endpoint
    secret: bytes

    @property
    def consumer(self) -> str:
        """Its durable consumer's name on the feed."""
        return f"webhook-{self.endpoint.name}"


def load_endpoints(path: Path) -> tuple[list[Target], EndpointsFile]:
    """Read and check the endpoints file and each secret; ValueError naming every problem."""
    try:
        parsed = EndpointsFile.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ValueError(f"{path}: {problems}") from None
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot be read as YAML ({error})") from None
    problems, targets, names = [], [], set()
    for endpoint in parsed.endpoints:
        url = urlsplit(endpoint.url)
        if url.scheme not in ("https", "http") or not url.hostname:
            problems.append(f"{endpoint.name}: {endpoint.url!r} is not an http(s) URL")
        elif url.scheme == "http" and not is_loopback(url.hostname) and not endpoint.allow_plaintext:
            problems.append(
                f"{endpoint.name}: plain http to {url.hostname} would send events unencrypted; "
                "use https, or set allow_plaintext: true behind a mesh that encrypts"
            )
        if endpoint.name in names:
            problems.append(f"{endpoint.name}: named twice")
        names.add(endpoint.name)
        try:
            secret = endpoint.secret_file.read_bytes().strip()
        except OSError as error:
            problems.append(f"{endpoint.name}: its secret file cannot be read ({error.strerror})")
            continue
        if len(secret) < 32:
            problems.append(f"{endpoint.name}: its secret is under 32 bytes; make one with `openssl rand -hex 32`")
        targets.append(Target(endpoint, secret))
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return targets, parsed


async def ensure_dead_letters(js: JetStreamContext) -> None:
    """The dead-letter stream: kept until an operator deals with its messages."""
    config = StreamConfig(
        name=WEBHOOKS_DEAD_STREAM,
        subjects=[f"{WEBHOOKS_DEAD_PREFIX}.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
    )
    await ensure_stream(js, config)


class Relay:
    """Delivers the feed to one endpoint."""

    def __init__(
        self,
        js: JetStreamContext,
        target: Target,
        http: httpx.AsyncClient,
        max_attempts: int,
        backoff_s: Sequence[float] = DEFAULT_BACKOFF_S,
    ) -> None:
        self._js = js
        self._target = target
        self._http = http
        self._max_attempts = max_attempts
        self._backoff_s = tuple(backoff_s)
        kinds = target.endpoint.kinds
        config = ConsumerConfig(
            durable_name=target.consumer,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW,
            # One at a time: an endpoint gets the events in the feed's order.
            max_ack_pending=1,
            ack_wait=max(60.0, 4 * http.timeout.read if http.timeout.read else 60.0),
        )
        if len(kinds) == 1:
            config.filter_subject = f"{EVENTS_PREFIX}.{kinds[0]}"
        elif kinds:
            config.filter_subjects = [f"{EVENTS_PREFIX}.{kind}" for kind in kinds]
        self._follower = EventFollower(js, config)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until stopped."""
        await self._follower.open()
        try:
            while not stop.is_set():
                try:
                    for delivery in await self._follower.fetch(1, timeout_s=1.0):
                        await self.deliver(delivery)
                except Exception as error:  # noqa: BLE001 - NATS reconnecting: the event comes again
                    name = self._target.endpoint.name
                    log.warning("webhook_relay_interrupted", endpoint=name, error=str(error)[:300])
                    await asyncio.sleep(1.0)
        finally:
            await self._follower.close()

    async def deliver(self, delivery: FeedEvent) -> None:
        """POST one event; settle it, try it again later, or dead-letter it."""
        name = self._target.endpoint.name
        body = json.dumps(MessageToDict(delivery.event, preserving_proto_field_name=True), sort_keys=True).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "candor-webhooks/1",
            "Candor-Event-Id": f"candor-record-{delivery.event.record_sequence}",
            "Candor-Event-Kind": delivery.event.kind,
            "Candor-Timestamp": timestamp,
            "Candor-Signature": sign(self._target.secret, timestamp, body),
        }
        attempt = delivery.message.metadata.num_delivered or 1  # type: ignore[union-attr]
        try:
            reply = await self._http.post(self._target.endpoint.url, content=body, headers=headers)
            problem = "" if 200 <= reply.status_code < 300 else f"HTTP {reply.status_code}"
            permanent = bool(problem) and 400 <= reply.status_code < 500 and reply.status_code not in RETRIED_STATUSES
        except httpx.HTTPError as error:
            problem, permanent = f"{type(error).__name__}: {error}"[:300], False
        if not problem:
            await delivery.ack()
            metrics.WEBHOOK_DELIVERIES.labels(name, "delivered").inc()
            return
        if permanent or attempt >= self._max_attempts:
            await self._dead_letter(delivery, attempt, problem)
            await delivery.ack()
            metrics.WEBHOOK_DELIVERIES.labels(name, "dead_lettered").inc()
            log.warning("webhook_dead_lettered", endpoint=name, record=delivery.event.record_sequence, problem=problem)
            return
        pause = self._backoff_s[min(attempt - 1, len(self._backoff_s) - 1)]
        await delivery.message.nak(delay=pause)
        metrics.WEBHOOK_DELIVERIES.labels(name, "retried").inc()
        log.info("webhook_retry", endpoint=name, record=delivery.event.record_sequence, attempt=attempt, pause_s=pause)

    async def _dead_letter(self, delivery: FeedEvent, attempts: int, problem: str) -> None:
        letter = {
            "endpoint": self._target.endpoint.name,
            "url": self._target.endpoint.url,
            "record_sequence": int(delivery.event.record_sequence),
            "kind": delivery.event.kind,
            "attempts": attempts,
            "problem": problem,
            "dead_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "event": MessageToDict(delivery.event, preserving_proto_field_name=True),
        }
        await self._js.publish(
            f"{WEBHOOKS_DEAD_PREFIX}.{self._target.endpoint.name}",
            json.dumps(letter).encode(),
            stream=WEBHOOKS_DEAD_STREAM,
            headers={"Nats-Msg-Id": f"{self._target.consumer}-{delivery.event.record_sequence}"},
        )


async def relay(
    login: NatsLogin, endpoints_file: Path, stop: asyncio.Event, backoff_s: Sequence[float] = DEFAULT_BACKOFF_S
) -> None:
    """Run one relay per endpoint until ``stop`` is set."""
    targets, settings = load_endpoints(endpoints_file)
    bus = await login.connect("candor-webhooks")
    try:
        await ensure_dead_letters(bus.jetstream)
        async with httpx.AsyncClient(timeout=settings.timeout_s, follow_redirects=False) as http:
            relays = [Relay(bus.jetstream, t, http, settings.max_attempts, backoff_s) for t in targets]
            log.info("webhooks_relaying", endpoints=[t.endpoint.name for t in targets])
            await asyncio.gather(*(r.run(stop) for r in relays))
    finally:
        await bus.close()


async def dead_letters(login: NatsLogin, endpoint: str = "") -> list[dict[str, object]]:
    """Every dead letter (of one endpoint, when named), oldest first."""
    bus = await login.connect("candor-dead-letters")
    try:
        js = bus.jetstream
        try:
            info = await js.stream_info(WEBHOOKS_DEAD_STREAM)
        except Exception:  # noqa: BLE001 - no relay has run yet: no stream, no letters
            return []
        letters: list[dict[str, object]] = []
        for sequence in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
            with contextlib.suppress(Exception):  # a gap (a letter an operator removed)
                message = await js.get_msg(WEBHOOKS_DEAD_STREAM, sequence)
                letter = json.loads(message.data or b"{}")
                if not endpoint or letter.get("endpoint") == endpoint:
                    letters.append(letter)
        return letters
    finally:
        await bus.close()
