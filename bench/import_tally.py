"""What the gateway's reading of import results costs now that each result is checked: the tally
taking each stored result with its subject (who sent it, whether it names its subject's photo,
whether its sender may give that outcome, whether it stands over the one held) beside the anchor,
the tally before the check (parse the result, keep its outcome and reason), alternating round by
round over the same results.

    .venv/bin/python bench/import_tally.py [--photos 100000] [--rounds 5]

Prints the microseconds a result of each, the ratio, and the load average. For scale: a photo
costs an import 60 to 90 ms of CPU through the pipeline (bench/RESULTS.md, import throughput).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from candor.ingest.v1 import ingest_pb2
from candor_gateway.imports import Tally
from candor_kit.ingest import result_subject

IMPORT_ID = "bench-tally-0001"


def stored_results(photos: int) -> list[tuple[str, bytes]]:
    """Each photo's result as the matcher stores it: its subject and its bytes."""
    stored = []
    for item in range(photos):
        result = ingest_pb2.ItemResult(
            item=ingest_pb2.ItemRef(import_id=IMPORT_ID, item=item, subject_id=f"S-{item}", submitted_by="bench"),
            outcome=ingest_pb2.OUTCOME_ENROLLED,
            record_id="0" * 36,
            image_sha256="0" * 64,
            stage="matcher",
        )
        stored.append((result_subject(IMPORT_ID, item, "match"), result.SerializeToString()))
    return stored


def checked(stored: list[tuple[str, bytes]]) -> float:
    """Seconds for the tally as it is to take every result."""
    tally = Tally(len(stored))
    start = time.perf_counter()
    for subject, data in stored:
        tally.take(subject, data)
    return time.perf_counter() - start


def unchecked(stored: list[tuple[str, bytes]]) -> float:
    """Seconds for the anchor: the tally before results were checked (parse, keep the last)."""
    outcomes = Tally(len(stored)).outcomes
    reasons = outcomes.copy()
    start = time.perf_counter()
    for _, data in stored:
        result = ingest_pb2.ItemResult()
        result.ParseFromString(data)
        if 0 <= result.item.item < len(outcomes):
            outcomes[result.item.item] = result.outcome
            reasons[result.item.item] = result.reason
    return time.perf_counter() - start


def main() -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    stored = stored_results(args.photos)
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    now, before = [], []
    for _ in range(args.rounds):
        now.append(checked(stored) / args.photos * 1e6)
        before.append(unchecked(stored) / args.photos * 1e6)
    for name, figures in (("checked tally (as it is)", now), ("unchecked tally (anchor)", before)):
        rounds = ", ".join(f"{x:.2f}" for x in figures)
        print(f"{name}: {statistics.median(figures):.2f} us a result (rounds: {rounds})")
    print(f"ratio checked / unchecked: {statistics.median(now) / statistics.median(before):.2f}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
