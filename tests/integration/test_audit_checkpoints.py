"""The audit service signs every record and publishes signed checkpoints that an outside party can
keep and hand back to Verify."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats

from candor.audit.v1 import audit_pb2
from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_kit import subjects
from candor_kit.audit_signing import checkpoint_message, key_id, load_public_key, verify_signature
from tests.integration.conftest import InProcessStack, as_user

AUDITOR = as_user("auditor-token")
INVESTIGATOR = as_user("investigator-token")


async def test_a_published_checkpoint_is_signed_and_verify_accepts_it_back(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, nats_url: str, samples: Path
) -> None:
    watcher = await nats.connect(nats_url)
    published: asyncio.Queue[audit_pb2.Checkpoint] = asyncio.Queue()

    async def keep(msg: nats.aio.msg.Msg) -> None:
        checkpoint = audit_pb2.Checkpoint()
        checkpoint.ParseFromString(msg.data)
        await published.put(checkpoint)

    await watcher.subscribe(subjects.AUDIT_CHECKPOINT, cb=keep)
    try:
        await gateway.Search(
            gateway_pb2.SearchRequest(
                probe_image=(samples / "obama2.jpg").read_bytes(), case_number="CP-1", purpose="investigation"
            ),
            metadata=INVESTIGATOR,
        )
        kept = await asyncio.wait_for(published.get(), timeout=15)
    finally:
        await watcher.close()

    first = await gateway.VerifyAudit(gateway_pb2.VerifyAuditRequest(), metadata=AUDITOR)
    public_key = load_public_key(first.public_key_pem)
    keys = {key_id(public_key): public_key}
    assert verify_signature(
        keys, kept.key_id, kept.signature, checkpoint_message(kept.sequence, kept.head_hash, kept.made_at)
    )
    again = await gateway.VerifyAudit(gateway_pb2.VerifyAuditRequest(checkpoints=[kept]), metadata=AUDITOR)
    assert again.ok and again.signatures_checked == again.records_checked
    assert again.checkpoints_checked >= 1

    forged = audit_pb2.Checkpoint()
    forged.CopyFrom(kept)
    forged.head_hash = "0" * 64
    refused = await gateway.VerifyAudit(gateway_pb2.VerifyAuditRequest(checkpoints=[forged]), metadata=AUDITOR)
    assert not refused.ok and "no valid signature" in refused.problem
