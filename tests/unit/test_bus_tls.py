"""The bus over TLS to a real nats-server, the refusal of plaintext NATS off loopback, and a round
trip that proves the server has read every command sent."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from candor.embedder.v1 import embedder_pb2
from candor_cli.processes import free_port, start_nats_server
from candor_cli.stack_secrets import ensure_nats_passwords
from candor_kit import Bus, ConfigError, EnvReader, ServiceUnavailable, subjects
from candor_kit.bus import round_trip
from candor_matcher import MatcherSettings
from tests.conftest import INTERNAL, self_signed


@pytest.fixture
def tls_nats(tmp_path: Path):  # type: ignore[no-untyped-def]
    cert, key = self_signed(tmp_path)
    port = free_port()
    process = start_nats_server(tmp_path, port, tls=(cert, key))
    yield f"tls://127.0.0.1:{port}", cert
    process.terminate()
    process.wait(10)


async def test_request_reply_over_tls_with_the_servers_ca(tls_nats) -> None:  # type: ignore[no-untyped-def]
    url, cert = tls_nats
    server = await Bus.connect(url, "responder", ca_file=str(cert))
    client = await Bus.connect(url, "requester", ca_file=str(cert))

    async def answer(_: embedder_pb2.GetModelRequest):  # type: ignore[no-untyped-def]
        from candor.common.v1 import common_pb2

        return common_pb2.ModelRef(id="over-tls")

    from candor.common.v1 import common_pb2

    await server.serve("t.model", "q", embedder_pb2.GetModelRequest, answer)
    reply = await client.request("t.model", embedder_pb2.GetModelRequest(), common_pb2.ModelRef, 5)
    assert reply.id == "over-tls"
    await client.close()
    await server.close()


async def test_a_served_subject_answers_at_once_on_freshly_started_servers(tmp_path: Path) -> None:
    """serve() returns only when the server holds the subscription. Before Bus.settle, about 1
    request in 10 made right after serve() on a fresh TLS server found no responder, because
    nats-py's flush() could get its PONG before the SUB left the client's buffer."""
    from candor.common.v1 import common_pb2

    async def answer(_: embedder_pb2.GetModelRequest) -> common_pb2.ModelRef:
        return common_pb2.ModelRef(id="at-once")

    for attempt in range(20):
        folder = tmp_path / f"server-{attempt}"
        folder.mkdir()
        cert, key = self_signed(folder)
        port = free_port()
        process = start_nats_server(folder, port, tls=(cert, key))
        try:
            url = f"tls://127.0.0.1:{port}"
            server = await Bus.connect(url, "responder", ca_file=str(cert))
            client = await Bus.connect(url, "requester", ca_file=str(cert))
            await server.serve("t.model", "q", embedder_pb2.GetModelRequest, answer)
            reply = await client.request("t.model", embedder_pb2.GetModelRequest(), common_pb2.ModelRef, 5)
            assert reply.id == "at-once", attempt
            await client.close()
            await server.close()
        finally:
            process.terminate()
            process.wait(10)


async def test_a_server_certificate_outside_the_trust_store_is_refused(tls_nats) -> None:  # type: ignore[no-untyped-def]
    url, _ = tls_nats
    with pytest.raises(ServiceUnavailable, match="certificate verify failed"):
        await Bus.connect(url, "requester", connect_deadline_s=3)


def test_plaintext_nats_to_a_network_address_is_refused() -> None:
    base = {"CANDOR_MATCHER_DATA_DIR": "/tmp/g", **INTERNAL}
    with pytest.raises(ConfigError, match="plaintext to a network address"):
        MatcherSettings.from_env(EnvReader({**base, "CANDOR_NATS_URL": "nats://10.0.0.5:4222"}))
    for allowed in (
        {"CANDOR_NATS_URL": "nats://10.0.0.5:4222", "CANDOR_NATS_PLAINTEXT": "allow"},
        {"CANDOR_NATS_URL": "tls://nats.internal:4222"},
        {"CANDOR_NATS_URL": "nats://localhost:4222"},
    ):
        assert MatcherSettings.from_env(EnvReader({**base, **allowed})).common.nats_url == allowed["CANDOR_NATS_URL"]


async def test_a_round_trip_returns_after_the_servers_answer_to_every_command_sent(tmp_path: Path) -> None:
    """round_trip() is what the permission tests rely on: once it returns, the refusal of a
    subscription sent just before has reached the error callback. With flush() alone, 26
    refusals in 300 came after it returned."""
    passwords = ensure_nats_passwords(tmp_path)
    port = free_port()
    process = start_nats_server(tmp_path, port, passwords=passwords)
    refusals: list[str] = []

    async def remember(exc: Exception) -> None:
        refusals.append(str(exc))

    try:
        client = await nats.connect(
            f"nats://127.0.0.1:{port}", user="operator", password=passwords["operator"], error_cb=remember
        )
        for sent in range(1, 301):
            await client.subscribe(subjects.DETECT)  # the operator's user may not read probe photos
            await round_trip(client)
            assert len(refusals) == sent, "a refusal came after round_trip() returned"
        await client.close()
    finally:
        process.terminate()
        process.wait(10)


async def test_a_bus_given_a_cluster_connects_past_a_server_that_is_down(nats_url: str) -> None:
    """CANDOR_NATS_URL may list a cluster's servers, comma-separated: a service starting while one
    node is down (killed, or rescheduled) connects to the next instead of failing."""
    dead = f"nats://127.0.0.1:{free_port()}"
    bus = await Bus.connect(f"{dead}, {nats_url}", "cluster-client", connect_deadline_s=10)
    try:
        assert bus.client.is_connected
        assert bus.client.connected_url is not None and bus.client.connected_url.port == int(nats_url.rsplit(":", 1)[1])
    finally:
        await bus.close()


def test_every_server_of_a_listed_cluster_is_held_to_the_plaintext_rule() -> None:
    base = {"CANDOR_MATCHER_DATA_DIR": "/tmp/g", **INTERNAL}
    listed = "nats://127.0.0.1:4222,nats://10.0.0.6:4222"
    with pytest.raises(ConfigError, match=r"10\.0\.0\.6:4222 is plaintext to a network address"):
        MatcherSettings.from_env(EnvReader({**base, "CANDOR_NATS_URL": listed}))
    with pytest.raises(ConfigError, match="must start with nats:// or tls://"):
        MatcherSettings.from_env(EnvReader({**base, "CANDOR_NATS_URL": "nats://127.0.0.1:4222,http://x"}))
    allowed = {"CANDOR_NATS_URL": listed, "CANDOR_NATS_PLAINTEXT": "allow"}
    assert MatcherSettings.from_env(EnvReader({**base, **allowed})).common.nats_url == listed


async def test_a_bus_moves_off_a_server_that_froze_within_seconds(tmp_path: Path) -> None:
    """A NATS node that vanishes without closing its connections (its host lost, its process
    frozen) is found by the client's pings, and the bus reconnects to another server of its list,
    instead of publishing into a dead connection for minutes (nats-py's default: 2 pings 2 min apart)."""
    import asyncio
    import os
    import signal

    servers = {}
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        port = free_port()
        servers[port] = start_nats_server(folder, port)
    bus = await Bus.connect(",".join(f"nats://127.0.0.1:{port}" for port in servers), "moving", connect_deadline_s=10)
    assert bus.client.connected_url is not None
    frozen_port = bus.client.connected_url.port
    frozen = servers[frozen_port]
    try:
        os.kill(frozen.pid, signal.SIGSTOP)
        began = asyncio.get_running_loop().time()
        for _ in range(60):
            await asyncio.sleep(1)
            url = bus.client.connected_url
            if bus.client.is_connected and url is not None and url.port != frozen_port:
                break
        else:
            raise AssertionError("the bus stayed on the frozen server for a minute")
        assert asyncio.get_running_loop().time() - began < 30
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
        await bus.close()
        for process in servers.values():
            process.terminate()
            process.wait(10)
