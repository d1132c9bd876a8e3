"""candor-client: Candor's gateway and event feed from Python, typed.

- ``GatewayClient``: the gateway's public API (candor.gateway.v1) with a bearer token or a
  service account's client credentials, a deadline on every call, a fresh client request id on
  Search, Enroll and DeleteSubject, and gRPC's own retries of those when the gateway is unavailable.
- ``EventFollower``: the event feed (stream CANDOR_EVENTS) through a durable consumer of the
  integration's own.
- ``verify``: check a webhook delivery's signature and timestamp (candor_client.webhooks).

It depends on the generated API (the ``candor`` package), grpcio, nats-py and httpx, never on
Candor's services or their kit; `scripts/build_client.py` builds it as the ``candor-client`` wheel.
"""

from candor_client.channel import MAX_MESSAGE, RETRIED_CALLS, channel_options, open_aio_channel, open_channel
from candor_client.events import EVENTS_PREFIX, EVENTS_STREAM, EventFollower, FeedEvent, consumer_config
from candor_client.gateway import GatewayClient, new_request_id
from candor_client.tokens import ClientCredentials, StaticToken, TokenError, TokenSource, bearer_metadata
from candor_client.webhooks import SignatureError, sign, verify

__all__ = [
    "EVENTS_PREFIX",
    "EVENTS_STREAM",
    "MAX_MESSAGE",
    "RETRIED_CALLS",
    "ClientCredentials",
    "EventFollower",
    "FeedEvent",
    "GatewayClient",
    "SignatureError",
    "StaticToken",
    "TokenError",
    "TokenSource",
    "bearer_metadata",
    "channel_options",
    "consumer_config",
    "new_request_id",
    "open_aio_channel",
    "open_channel",
    "sign",
    "verify",
]
