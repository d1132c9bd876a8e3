"""What naming an import's photos together in the audit chain saves: the matcher's naming of the
photos a worker settled together in one `gallery.import_enrolled` event (the service as it is)
beside one event a photo (the anchor: the matcher before the change), through a real nats-server
into the audit service's consume loop and a real SQLite chain, alternating run by run.

    .venv/bin/python bench/import_naming.py [--photos 400] [--together 4] [--rounds 3] [--pace-ms 50]

Each run names ``--photos`` photos arriving one by one ``--pace-ms`` apart (an import on this
machine settles a photo every 50 to 100 ms; a larger one faster), up to ``--together`` in one event
(the import worker's ``CANDOR_IMPORT_BATCH``, 4 by default), while the audit service's consume loop
appends what comes to a new chain, as in a running stack. Prints per photo: the CPU of the
bench's process (the matcher's side: events made and stored on the stream; the audit service's:
decode, hash, sign, SQL with its disk sync, ack), nats-server's, the chain's records and bytes, and
the ratio of the whole CPU, with the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from audit_append import SIGNER, fresh_audit_stream, run_quietly  # noqa: E402  (beside this file)
from proc_cpu import cpu_seconds  # noqa: E402

from candor_audit.chain import AuditChain  # noqa: E402
from candor_audit.service import AuditLog, consume  # noqa: E402
from candor_cli.processes import free_port, start_nats_server  # noqa: E402
from candor_kit import AuditPublisher, Bus  # noqa: E402
from candor_matcher.naming import KIND, ImportNaming, NamedPhoto  # noqa: E402

FETCH_BATCH = 64  # CANDOR_AUDIT_FETCH_BATCH's default


def photo(run: int, item: int) -> NamedPhoto:
    """One enrolled photo, with the fields the matcher names (a 40-character photo reference)."""
    record = {
        "item": item,
        "subject_id": f"subject-{item:06d}",
        "record_id": f"{item:08x}-0000-5000-8000-000000000000",
        "created": True,
        "image_sha256": f"{item:064x}",
        "image_ref": f"bookings/2026/11/{item:06d}/front-photo.jpg",
    }
    return NamedPhoto(f"bench-import-{run:04d}", item, "gallery-admin", ("sface", "2021dec"), record)


async def one_a_photo(publisher: AuditPublisher, enrolled: NamedPhoto) -> None:
    """The anchor: the matcher's event for one photo, as it was before the change."""
    details = {**enrolled.record, "import_id": enrolled.import_id, "model": {"id": "sface", "version": "2021dec"}}
    await publisher.publish(
        KIND, actor=enrolled.submitted_by, details=details, event_id=f"{enrolled.import_id}.{enrolled.item}.enroll"
    )


async def one_run(
    bus: Bus, nats_pid: int, chain_path: Path, run: int, args: argparse.Namespace, together: bool
) -> dict[str, float]:
    """Per-photo CPU ms (this process: the matcher's publishing and the audit service's consuming;
    nats-server), records and chain bytes a photo."""
    await fresh_audit_stream(bus)
    publisher = AuditPublisher(bus, "matcher")
    naming = ImportNaming(publisher, args.together)
    photos = [photo(run, n) for n in range(args.photos)]
    chain = AuditChain(chain_path, SIGNER)
    audit_log = AuditLog(chain, SIGNER)
    stop = asyncio.Event()
    cpu, server = time.process_time(), cpu_seconds(nats_pid)
    # The audit service consumes as the events come, as in a running stack.
    task = asyncio.create_task(consume(bus, audit_log, FETCH_BATCH, stop))
    # Photos reach the matcher one by one, at the pipeline's pace, each settled by a task of its own.
    naming_tasks = []
    for one in photos:
        named = naming.name(one) if together else one_a_photo(publisher, one)
        naming_tasks.append(asyncio.create_task(named))
        await asyncio.sleep(args.pace_ms / 1000)
    await asyncio.gather(*naming_tasks)
    events = publisher.last_sequence
    while audit_log.watermark.settled < events:  # noqa: ASYNC110 - the bench polls, as a reader would
        await asyncio.sleep(0.005)
    used, server_used = time.process_time() - cpu, cpu_seconds(nats_pid) - server
    stop.set()
    await task
    records = len(chain.query(limit=args.photos + 10))
    chain.close()
    size = sum(path.stat().st_size for path in chain_path.parent.glob(chain_path.name + "*"))
    per = 1000 / args.photos
    return {"bench": used * per, "nats": server_used * per, "records": per * records / 1000, "bytes": per * size / 1000}


async def measure(args: argparse.Namespace, folder: Path) -> None:
    port = free_port()
    server = start_nats_server(folder / "nats", port)
    bus = await Bus.connect(f"nats://127.0.0.1:{port}", "bench-import-naming")
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    run = 0
    try:
        for round_ in range(1, args.rounds + 1):
            for together in (False, True):
                run += 1
                chain_path = folder / f"chain-{run}" / "audit.sqlite3"
                chain_path.parent.mkdir()
                figures = await one_run(bus, server.pid, chain_path, run, args, together)
                results[together].append(figures)
            one, many = results[False][-1], results[True][-1]
            ratio = sum(many[k] for k in ("bench", "nats")) / sum(one[k] for k in ("bench", "nats"))
            print(f"round {round_}: {line('one a photo', one)} | {line('together', many)} | CPU ratio {ratio:.2f}")
    finally:
        await bus.close()
        server.terminate()
        server.wait(10)
    print()
    medians = {
        together: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for together, runs in results.items()
    }
    for together, label in ((False, "one event a photo"), (True, f"{args.together} photos an event")):
        print(f"median, {label}: {line('', medians[together])}")
    whole = {t: sum(medians[t][k] for k in ("bench", "nats")) for t in (False, True)}
    ratio = whole[True] / whole[False]
    print(f"CPU a photo named, together / one a photo: {ratio:.2f} ({whole[True]:.3f} / {whole[False]:.3f} ms)")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def line(label: str, figures: dict[str, float]) -> str:
    """One run's figures a photo."""
    return (
        f"{label} matcher and audit {figures['bench']:.3f} + nats-server {figures['nats']:.3f} ms CPU, "
        f"{figures['records']:.2f} records, {figures['bytes'] / 1024:.2f} KiB"
    ).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--together", type=int, default=4, help="photos settled at once (CANDOR_IMPORT_BATCH)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pace-ms", type=float, default=20, help="time between one photo's arrival and the next's")
    run_quietly(measure, parser.parse_args())


if __name__ == "__main__":
    main()
