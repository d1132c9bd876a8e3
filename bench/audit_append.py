"""What batching the audit chain's appends saves: the audit service's consume loop taking a backlog
of events off a real nats-server into the chain, each fetched batch appended in one transaction
(the service as it is) beside the same loop committing each event on its own (the anchor: the
service before the change), on SQLite (WAL, full sync) and on a real PostgreSQL server (fsync on),
alternating run by run.

    .venv/bin/python bench/audit_append.py [--events 1000] [--rounds 3] [--batch 64]

Each run starts with ``--events`` of the matcher's ``gallery.import_enrolled`` events waiting on the
stream (an import chunk's records, say) and a new chain, and is timed from the loop's start to the
last event settled. Prints events/s, the bench process's CPU a event (the audit service's own work:
decode, hash, sign, SQL, ack; PostgreSQL's server CPU is not in it), and the ratio batched / one a
commit per round, with the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services" / "audit"))

from candor_audit.chain import AuditChain, PostgresAuditChain, SqlAuditChain  # noqa: E402
from candor_audit.service import AuditLog, consume  # noqa: E402
from candor_cli.processes import free_port, start_nats_server  # noqa: E402
from candor_kit import AuditPublisher, Bus, subjects  # noqa: E402
from candor_kit.audit_events import AUDIT_STREAM, ensure_audit_stream  # noqa: E402
from candor_kit.audit_records import AuditEntry, StoredRecord  # noqa: E402
from candor_kit.audit_signing import Signer  # noqa: E402
from tests.postgres import PostgresServer  # noqa: E402

SIGNER = Signer(Ed25519PrivateKey.generate())


class OneCommitEach:
    """A chain that commits each entry of a batch on its own: the anchor, as the service was."""

    def __init__(self, chain: SqlAuditChain) -> None:
        self._chain = chain

    def append_many(self, items: Sequence[tuple[AuditEntry, str]]) -> list[StoredRecord | None]:
        return [self._chain.append_many([item])[0] for item in items]


async def fresh_audit_stream(bus: Bus) -> None:
    """An empty audit stream, with no consumer yet."""
    try:
        await bus.jetstream.delete_stream(AUDIT_STREAM)
    except Exception:  # noqa: BLE001 - the first run: there is none yet
        pass
    await ensure_audit_stream(bus)


async def backlog(bus: Bus, events: int) -> None:
    """A fresh audit stream holding ``events`` enrolment records, and no consumer yet."""
    await fresh_audit_stream(bus)
    publisher = AuditPublisher(bus, "matcher")
    details = {"record_id": "r" * 36, "image_sha256": "0" * 64, "import_id": "bench-import", "created": True}
    for n in range(events):
        await publisher.publish("gallery.import_enrolled", actor="importer", details={**details, "item": n})


async def one_run(bus: Bus, chain: SqlAuditChain, batched: bool, events: int, batch: int) -> tuple[float, float]:
    """(events/s, CPU ms an event) of the consume loop draining the backlog into ``chain``."""
    await backlog(bus, events)
    audit_log = AuditLog(chain if batched else OneCommitEach(chain), SIGNER)  # type: ignore[arg-type]
    stop = asyncio.Event()
    began, cpu = time.perf_counter(), time.process_time()
    task = asyncio.create_task(consume(bus, audit_log, batch, stop))
    while audit_log.watermark.settled < events:  # noqa: ASYNC110 - the bench polls, as a reader would
        await asyncio.sleep(0.005)
    elapsed, used = time.perf_counter() - began, time.process_time() - cpu
    stop.set()
    await task
    chain.close()
    info = await bus.jetstream.consumer_info(AUDIT_STREAM, subjects.AUDIT_CONSUMER)
    if info.num_ack_pending or info.num_pending:
        raise RuntimeError("events were left unsettled")
    return events / elapsed, used / events * 1000


async def measure(args: argparse.Namespace, folder: Path) -> None:
    port = free_port()
    server = start_nats_server(folder / "nats", port)
    postgres = PostgresServer()
    bus = await Bus.connect(f"nats://127.0.0.1:{port}", "bench-audit-append")
    backends: dict[str, Callable[[int], SqlAuditChain]] = {
        "sqlite": lambda n: AuditChain(folder / f"chain-{n}.sqlite3", SIGNER),
        "postgres": lambda n: PostgresAuditChain(postgres.new_database(), SIGNER),
    }
    results: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    try:
        made = 0
        for round_ in range(1, args.rounds + 1):
            for name, open_chain in backends.items():
                row = []
                for batched in (False, True):
                    made += 1
                    rate, cpu = await one_run(bus, open_chain(made), batched, args.events, args.batch)
                    results.setdefault((name, batched), []).append((rate, cpu))
                    row.append(f"{'batched' if batched else 'one a commit'} {rate:7.0f}/s {cpu:.3f} ms CPU")
                ratio = results[(name, True)][-1][0] / results[(name, False)][-1][0]
                print(f"round {round_} {name:8}: {row[0]} | {row[1]} | batched/one {ratio:.2f}x", flush=True)
    finally:
        await bus.close()
        server.terminate()
        server.wait(10)
        postgres.stop()
    print()
    for name in backends:
        one = statistics.median(rate for rate, _ in results[(name, False)])
        many = statistics.median(rate for rate, _ in results[(name, True)])
        one_cpu = statistics.median(cpu for _, cpu in results[(name, False)])
        many_cpu = statistics.median(cpu for _, cpu in results[(name, True)])
        print(
            f"{name:8} median: one a commit {one:.0f} events/s ({one_cpu:.3f} ms CPU an event), "
            f"batched {many:.0f} events/s ({many_cpu:.3f} ms); batched/one {many / one:.2f}x"
        )
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="events fetched at once (CANDOR_AUDIT_FETCH_BATCH)")
    run_quietly(measure, parser.parse_args())


def run_quietly(measure: Callable[[argparse.Namespace, Path], Awaitable[None]], args: argparse.Namespace) -> None:
    """Run ``measure`` in a scratch folder, the audit service's log lines filtered out (it logs a
    line an appended event; the bench measures the work, not a terminal), the load average first."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="candor-audit-bench-") as folder:
        asyncio.run(measure(args, Path(folder)))


if __name__ == "__main__":
    main()
