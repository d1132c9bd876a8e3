"""The five services running in this test process, against a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

import candor_audit
import candor_detector
import candor_embedder
import candor_gateway
import candor_matcher
from candor.gateway.v1 import gateway_pb2_grpc
from candor_cli.processes import StackError, free_port
from candor_cli.processes import wait_serving as stack_wait_serving
from candor_cli.stack import AUDIENCE, LOCAL_ISSUER, service_settings
from candor_gateway.photos import PhotoStore
from candor_kit import Bus, EnvReader
from candor_kit.aes_keys import read_aes_key
from candor_kit.keys import generate_token_keys
from candor_kit.policy import DEFAULT_POLICY_YAML
from candor_kit.tokens import issue_token, load_private_key

#: The test users, by the name the tests call them by: (user, roles).
USERS = {
    "investigator-token": ("ivy", ["investigator"]),
    "enroller-token": ("eric", ["gallery-admin"]),
    "auditor-token": ("audrey", ["auditor"]),
    "reviewer-a": ("rita", ["reviewer"]),
    "reviewer-b": ("rob", ["reviewer"]),
    "supervisor": ("sue", ["supervisor"]),
    # Both roles, to show that holding the reviewer role does not let one review one's own search.
    "investigating-reviewer": ("iris", ["investigator", "reviewer"]),
}
#: A token-signing key made for this test session; the gateway trusts its public half.
TOKEN_KEY, TOKEN_PUBLIC_KEY = generate_token_keys()
TOKENS = {
    name: issue_token(load_private_key(TOKEN_KEY), user, roles, 3600, LOCAL_ISSUER, AUDIENCE)
    for name, (user, roles) in USERS.items()
}
#: The stack's policy: the default, except that tests need no authorisation reference and have no
#: daily quota (the tests of those rules switch them on with InProcessStack.use_policy), and that
#: SFace's threshold is held to its nominal 0.642: the calibration on ten sample photos (42
#: non-mated pairs, FMR 0.05) allows 0.76, loose enough to show biden a stranger from t1.jpg.
POLICY = (
    DEFAULT_POLICY_YAML.replace("authorisation_reference: required", "authorisation_reference: optional")
    .replace("searches_per_user_per_day: 200", "searches_per_user_per_day: 0")
    .replace("thresholds: {}", "thresholds: {sface: 0.642}")
    .replace("[investigation, missing-person, victim-identification]", "[investigation, missing-person]")
)
MAX_MESSAGE = 16 * 1024 * 1024


#: Each service's settings class and serve coroutine, as `python -m candor_<name>` pairs them.
SERVICES: dict[str, tuple[Any, Any]] = {
    module.__name__.removeprefix("candor_"): (settings, module.serve)
    for module, settings in (
        (candor_gateway, candor_gateway.GatewaySettings),
        (candor_detector, candor_detector.DetectorSettings),
        (candor_embedder, candor_embedder.EmbedderSettings),
        (candor_matcher, candor_matcher.MatcherSettings),
        (candor_audit, candor_audit.AuditSettings),
    )
}


@dataclass
class RunningService:
    """One service's serve() task and its stop switch."""

    task: asyncio.Task[None]
    stop: asyncio.Event


@dataclass
class InProcessStack:
    """Services started in this event loop; each can be stopped and started again."""

    root: Path
    nats_url: str
    addresses: dict[str, str] = field(default_factory=dict)
    running: dict[str, RunningService] = field(default_factory=dict)
    #: The gateway's Prometheus listener (one per process: the services here share a registry).
    metrics_address: str = ""

    def env(self, name: str) -> dict[str, str]:
        base = {
            "CANDOR_NATS_URL": self.nats_url,
            "CANDOR_GRPC_ADDRESS": self.addresses[name],
            "CANDOR_SHUTDOWN_GRACE_S": "1",
            **({"CANDOR_AUDIT_CHECKPOINT_INTERVAL_S": "1"} if name == "audit" else {}),
        }
        specific = service_settings(name, self.root, policy=self.root / "policy.yaml", allow_uncalibrated=False)
        if name == "gateway":
            specific.update(
                CANDOR_METRICS_ADDRESS=self.metrics_address,
                CANDOR_GATEWAY_POLICY_RELOAD_S="1",
                CANDOR_GATEWAY_RETENTION_SWEEP_S="1",
            )
        return {**base, **specific}

    async def use_policy(self, text: str) -> None:
        """Put a policy in force: rewrite the file and restart the gateway on it."""
        await self.stop("gateway")
        (self.root / "policy.yaml").write_text(text)
        await self.start("gateway")

    async def start(self, name: str) -> None:
        settings_type, serve = SERVICES[name]
        settings = settings_type.from_env(EnvReader(self.env(name)))
        stop = asyncio.Event()
        task = asyncio.create_task(serve(settings, stop), name=f"serve-{name}")
        self.running[name] = RunningService(task, stop)
        await wait_serving(self.addresses[name], task)

    async def stop(self, name: str) -> None:
        service = self.running.pop(name)
        service.stop.set()
        await asyncio.wait_for(service.task, timeout=30)


async def wait_serving(address: str, task: asyncio.Task[None], timeout_s: float = 60) -> None:
    """The stack's own health wait, on a thread so the in-process service keeps running."""
    try:
        await asyncio.to_thread(stack_wait_serving, address, timeout_s, lambda: not task.done())
    except StackError:
        if task.done():
            task.result()  # the service's own exception says more than "exited"
        raise


def calibrate_default(dataset: Path, registry: Path) -> str:
    """A real calibration of the default model (SFace) on the sample dataset, stored in the registry."""
    from candor_eval import PipelineSpec, embed_all, load_dataset
    from candor_eval.calibration import calibrate
    from candor_faces.embedding import build_engine
    from candor_kit.model_registry import ModelRegistry

    engine = build_engine("sface", None, None)
    labelled = load_dataset(dataset)
    embedded = embed_all(PipelineSpec().build(), labelled.images)
    record = calibrate(labelled, embedded, engine.model.id, engine.model.version, engine.model.metric, 0.05)
    ModelRegistry(registry).save(record)
    return record.calibration_id


@pytest_asyncio.fixture(scope="session")
async def stack(
    nats_url: str, tmp_path_factory: pytest.TempPathFactory, sample_dataset: Path
) -> AsyncIterator[InProcessStack]:
    root = tmp_path_factory.mktemp("stack")
    calibrate_default(sample_dataset, root / "models")
    (root / "secrets").mkdir(mode=0o700)
    (root / "secrets" / "token-keys.pem").write_bytes(TOKEN_PUBLIC_KEY)
    (root / "secrets" / "token-signing.pem").write_bytes(TOKEN_KEY)
    (root / "policy.yaml").write_text(POLICY)
    running = InProcessStack(root=root, nats_url=nats_url, metrics_address=f"127.0.0.1:{free_port()}")
    for name in ("audit", "matcher", "embedder", "detector", "gateway"):
        running.addresses[name] = f"127.0.0.1:{free_port()}"
        await running.start(name)
    yield running
    for name in list(running.running):
        await running.stop(name)


@pytest_asyncio.fixture(scope="session")
async def gateway(stack: InProcessStack) -> AsyncIterator[gateway_pb2_grpc.GatewayServiceStub]:
    options = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
    async with grpc.aio.insecure_channel(stack.addresses["gateway"], options=options) as channel:
        yield gateway_pb2_grpc.GatewayServiceStub(channel)


def as_user(name: str) -> tuple[tuple[str, str]]:
    """Call metadata with the bearer token of a test user (USERS), or ``name`` itself as the token."""
    return (("authorization", f"Bearer {TOKENS.get(name, name)}"),)


@pytest.fixture
async def store(stack: InProcessStack) -> AsyncIterator[PhotoStore]:
    """The stack's photo store, read with the gateway's key over a connection of the test's own."""
    bus = await Bus.connect(stack.nats_url, "photo-test")
    photos = PhotoStore(read_aes_key(stack.root / "secrets" / "photo-key", "photo key"))
    await photos.open(bus)
    yield photos
    await bus.close()
