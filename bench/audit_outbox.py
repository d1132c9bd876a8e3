"""What the matcher's audit outbox saves a search: writing its record to the outbox against storing
it on the audit stream before answering (the anchor), side by side on one real nats-server.

Both sides make the same event (the matcher's ``matcher.searched`` with three record ids) and
alternate call by call. A third column writes the same bytes to a SQLite file synced to disk at
each write (``synchronous=FULL``), the stricter outbox that was measured and not chosen.

    python bench/audit_outbox.py [--events 300] [--rounds 3]

Prints each side's p50 and p90 and the ratio outbox / stream per round, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from candor.audit.v1 import audit_pb2  # noqa: E402
from candor_cli.processes import free_port, start_nats_server  # noqa: E402
from candor_kit import AuditPublisher, Bus  # noqa: E402
from candor_kit.audit_events import ensure_audit_stream  # noqa: E402
from candor_kit.audit_outbox import AuditOutbox  # noqa: E402

DETAILS = {"model": "sface", "limit": 10, "max_distance": 0.642, "record_ids": [str(n) * 36 for n in range(3)]}


def quantiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    return f"p50 {statistics.median(ordered):.3f} p90 {ordered[int(0.9 * len(ordered))]:.3f} ms"


async def measure(events: int, rounds: int, folder: Path) -> None:
    port = free_port()
    server = start_nats_server(folder / "nats", port)
    bus = await Bus.connect(f"nats://127.0.0.1:{port}", "bench-outbox")
    try:
        await ensure_audit_stream(bus)
        publisher = AuditPublisher(bus, "matcher")
        outbox = AuditOutbox(publisher, folder / "outbox.sqlite3")
        recorder = AuditPublisher(bus, "matcher", store=outbox.write)
        await outbox.open()
        synced = sqlite3.connect(folder / "synced.sqlite3", isolation_level=None)
        synced.execute("PRAGMA journal_mode=WAL")
        synced.execute("PRAGMA synchronous=FULL")
        synced.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY, subject TEXT, event BLOB)")

        async def write_synced(subject: str, event: audit_pb2.AuditEvent) -> bool:
            synced.execute("INSERT INTO outbox (subject, event) VALUES (?, ?)", (subject, event.SerializeToString()))
            return True

        recorder_synced = AuditPublisher(bus, "matcher", store=write_synced)
        for round_number in range(1, rounds + 1):
            stream: list[float] = []
            written: list[float] = []
            fsynced: list[float] = []
            for _ in range(events):
                start = time.perf_counter()
                await publisher.publish("matcher.searched", actor="bench", details=DETAILS)
                stream.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(0.002)
                start = time.perf_counter()
                await recorder.publish("matcher.searched", actor="bench", details=DETAILS)
                written.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(0.002)
                start = time.perf_counter()
                await recorder_synced.publish("matcher.searched", actor="bench", details=DETAILS)
                fsynced.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(0.002)
            ratio = statistics.median(written) / statistics.median(stream)
            print(f"round {round_number}: stream {quantiles(stream)} | outbox {quantiles(written)} | ratio {ratio:.2f}")
            print(f"         synced at each write (not chosen): {quantiles(fsynced)}")
        await outbox.drain(30)
        await outbox.close()
        synced.close()
    finally:
        await bus.close()
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    # On the repository's own disk (not a tmpfs /tmp), where a matcher's data folder would be.
    with tempfile.TemporaryDirectory(prefix="candor-bench-outbox-", dir=ROOT / ".cache") as folder:
        asyncio.run(measure(args.events, args.rounds, Path(folder)))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
