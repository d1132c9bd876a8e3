"""The webhook relay through the running services and real HTTP endpoints on loopback: a search's
event reaches each endpoint signed with its own secret; a failing endpoint is tried again with
growing pauses, one that refuses or stays down ends on the dead-letter list; a relay restarted
loses nothing; every outcome is counted in Prometheus."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_cli.processes import free_port
from candor_cli.webhooks import dead_letters, relay
from candor_client import SignatureError, verify
from candor_kit.bus import NatsLogin
from tests.integration.conftest import InProcessStack, as_user
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
SECRETS = {"ok": b"a" * 40, "flaky": b"b" * 40, "refusing": b"c" * 40, "down": b"d" * 40}


@dataclass
class Receiver:
    """What one endpoint was sent, and how it answers: the statuses in ``answers`` in turn, then 200."""

    secret: bytes
    answers: list[int] = field(default_factory=list)
    received: list[dict[str, object]] = field(default_factory=list)
    attempts: int = 0
    bad_signatures: int = 0


@pytest.fixture
def receivers() -> Iterator[tuple[str, dict[str, Receiver]]]:
    endpoints = {
        "ok": Receiver(SECRETS["ok"]),
        "flaky": Receiver(SECRETS["flaky"], answers=[503, 503]),
        "refusing": Receiver(SECRETS["refusing"], answers=[400] * 10),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver = endpoints[self.path.strip("/")]
            body = self.rfile.read(int(self.headers["Content-Length"]))
            receiver.attempts += 1
            try:
                verify(receiver.secret, self.headers["Candor-Timestamp"], body, self.headers["Candor-Signature"])
            except SignatureError:
                receiver.bad_signatures += 1
                self.send_response(400)
                self.end_headers()
                return
            status = receiver.answers.pop(0) if receiver.answers else 200
            if status == 200:
                receiver.received.append({**json.loads(body), "event_id": self.headers["Candor-Event-Id"]})
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", endpoints
    server.shutdown()
    server.server_close()


def endpoints_file(tmp_path: Path, base: str) -> Path:
    entries = []
    for name, secret in SECRETS.items():
        (tmp_path / f"{name}.secret").write_bytes(secret)
        # "down": a port nothing listens on.
        url = f"http://127.0.0.1:{free_port()}/down" if name == "down" else f"{base}/{name}"
        entries.append({"name": name, "url": url, "secret_file": str(tmp_path / f"{name}.secret")})
    path = tmp_path / "endpoints.yaml"
    path.write_text(json.dumps({"endpoints": entries, "max_attempts": 3, "timeout_s": 2}))
    return path


def counted(endpoint: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("candor_webhook_deliveries_total", {"endpoint": endpoint, "outcome": outcome}) or 0


async def test_each_endpoint_gets_signed_events_retries_and_dead_letters(
    stack: InProcessStack,
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    samples: Path,
    tmp_path: Path,
    receivers: tuple[str, dict[str, Receiver]],
) -> None:
    base, endpoints = receivers
    path = endpoints_file(tmp_path, base)
    login = NatsLogin(stack.nats_url)
    before = {name: counted(name, "dead_lettered") for name in SECRETS}
    stop = asyncio.Event()
    running = asyncio.create_task(relay(login, path, stop, backoff_s=(0.2, 0.4)))
    await asyncio.sleep(1.5)  # the relay makes its consumers, which start at new events
    found = await gateway.Search(
        gateway_pb2.SearchRequest(
            probe_image=(samples / "obama2.jpg").read_bytes(), case_number="HOOK-1", purpose="investigation"
        ),
        metadata=as_user("investigator-token"),
    )

    async def settled() -> bool:
        return (
            any(e["search_id"] == found.search_id for e in endpoints["ok"].received)
            and any(e["search_id"] == found.search_id for e in endpoints["flaky"].received)
            and counted("refusing", "dead_lettered") > before["refusing"]
            and counted("down", "dead_lettered") > before["down"]
        )

    await eventually(settled, timeout_s=30)
    event = next(e for e in endpoints["ok"].received if e["search_id"] == found.search_id)
    assert event["kind"] == "search.completed" and event["case_number"] == "HOOK-1"
    assert str(event["event_id"]).startswith("candor-record-")
    assert endpoints["flaky"].attempts >= 3 and counted("flaky", "retried") >= 2
    assert endpoints["refusing"].attempts == 1  # a 400 is not tried again
    assert all(r.bad_signatures == 0 for r in endpoints.values())

    letters = await dead_letters(NatsLogin(stack.nats_url))
    mine = {
        (letter["endpoint"], letter["attempts"])
        for letter in letters
        if letter["event"]["search_id"] == found.search_id
    }  # type: ignore[index]
    assert mine == {("refusing", 1), ("down", 3)}
    refused = next(letter for letter in letters if letter["endpoint"] == "refusing")
    assert refused["problem"] == "HTTP 400"

    # Stopped, the relay misses nothing: what happens meanwhile is delivered when it is back.
    stop.set()
    await running
    second = await gateway.Search(
        gateway_pb2.SearchRequest(
            probe_image=(samples / "obama2.jpg").read_bytes(), case_number="HOOK-2", purpose="investigation"
        ),
        metadata=as_user("investigator-token"),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(relay(login, path, stop, backoff_s=(0.2, 0.4)))

    async def delivered_after_restart() -> bool:
        return any(e["search_id"] == second.search_id for e in endpoints["ok"].received)

    await eventually(delivered_after_restart, timeout_s=30)
    assert [e["search_id"] for e in endpoints["ok"].received].count(found.search_id) == 1
    stop.set()
    await running
