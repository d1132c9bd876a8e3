"""Channels to the gateway: message limits that fit a photo, TLS when a CA is given, and gRPC's
own retries of the calls a client request id makes safe to repeat."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

#: The gateway's largest message: a photo up to 12 MB and its request around it.
MAX_MESSAGE = 16 * 1024 * 1024
#: The calls that carry a client request id (so the gateway answers a retry with the first call's
#: answer) and that gRPC therefore retries by itself when the gateway is UNAVAILABLE: the same
#: request, id and all, after a random backoff of up to 0.5, 1, 2 then 4 s.
RETRIED_CALLS = ("Search", "Enroll", "DeleteSubject", "SeedProficiencyTest")
SERVICE_CONFIG = {
    # Every address the gateway's name resolves to (replicas behind Docker's DNS or a headless
    # Service) takes calls in turn, and one that goes is left out until it is back: with gRPC's
    # default (pick_first) one replica would take every call of a client.
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": "candor.gateway.v1.GatewayService", "method": method} for method in RETRIED_CALLS],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.5s",
                "maxBackoff": "4s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}


def channel_options(retries: bool = True) -> list[tuple[str, object]]:
    """gRPC channel options: the message limits, and (with ``retries``) the retry policy with a
    buffer that keeps a whole photo for the retry (gRPC's default keeps 256 KiB)."""
    options: list[tuple[str, object]] = [
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        # A gateway that vanishes without closing the connection (its host lost, its process
        # frozen) is found by a ping unanswered for 5 s, sent every 10 s while a call waits, and
        # the call fails UNAVAILABLE (retried on another gateway) instead of waiting out its deadline.
        # gRPC core times a ping out after ping_timeout_ms (60 s by default), whatever
        # keepalive_timeout_ms says, and sends no more than one ping in min_time_between_pings_ms
        # without data (5 min by default): both set here, or the ping never finds anything.
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_time_between_pings_ms", 10_000),
        ("grpc.http2.ping_timeout_ms", 5_000),
    ]
    if retries:
        options += [
            ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
            ("grpc.per_rpc_retry_buffer_size", MAX_MESSAGE),
            ("grpc.retry_buffer_size", 4 * MAX_MESSAGE),
        ]
    return options


def _credentials(ca_file: str | Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=Path(ca_file).read_bytes())


def open_channel(address: str, ca_file: str | Path = "", retries: bool = True) -> grpc.Channel:
    """A blocking channel: TLS checked against ``ca_file`` when given, plaintext otherwise."""
    if ca_file:
        return grpc.secure_channel(address, _credentials(ca_file), options=channel_options(retries))
    return grpc.insecure_channel(address, options=channel_options(retries))


def open_aio_channel(address: str, ca_file: str | Path = "", retries: bool = True) -> grpc.aio.Channel:
    """An asyncio channel: TLS checked against ``ca_file`` when given, plaintext otherwise."""
    if ca_file:
        return grpc.aio.secure_channel(address, _credentials(ca_file), options=channel_options(retries))
    return grpc.aio.insecure_channel(address, options=channel_options(retries))
