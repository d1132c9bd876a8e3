"""``candor proficiency seed``: a supervisor seeds known-answer comparisons from the agency's own
labelled pairs into reviewers' queues (the oversight report scores the reviewers on them).

The pairs file is CSV with a header: ``probe,candidate,same,case,subject`` and optionally
``source``; ``same`` is yes or no; ``case`` and ``subject`` are the case number and subject id the
test is shown under, chosen to look like the agency's real work. Paths are relative to the file.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import grpc

from candor.gateway.v1 import gateway_pb2
from candor_client import GatewayClient

REQUIRED = ("probe", "candidate", "same", "case", "subject")
ANSWERS = {"yes": True, "y": True, "true": True, "1": True, "no": False, "n": False, "false": False, "0": False}


def add_proficiency_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    """``candor proficiency seed``."""
    proficiency = commands.add_parser("proficiency", help="known-answer tests of reviewers (supervisors)")
    actions = proficiency.add_subparsers(dest="action", required=True)
    seed = actions.add_parser("seed", parents=[common], help="seed known-answer comparisons from labelled pairs")
    seed.add_argument("pairs", type=Path, help="CSV: probe,candidate,same,case,subject[,source]")
    seed.add_argument("--purpose", required=True, help="the allowed purpose the tests are shown under")
    seed.add_argument("--searcher", required=True, help="the searcher's name the tests are shown under")
    seed.add_argument(
        "--shown-source", default="", help="the enrolment source the candidates are shown with (as real ones carry)"
    )


def read_pairs(path: Path) -> list[dict[str, str]]:
    """The pairs file's rows; ValueError naming the row and what is wrong."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in REQUIRED if name not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: the header lacks {', '.join(missing)} (it needs {','.join(REQUIRED)})")
        rows = list(reader)
    for number, row in enumerate(rows, start=2):
        if str(row["same"]).strip().lower() not in ANSWERS:
            raise ValueError(f"{path} line {number}: same is yes or no, not {row['same']!r}")
        for name in ("probe", "candidate"):
            if not (path.parent / row[name]).is_file():
                raise ValueError(f"{path} line {number}: no photo at {path.parent / row[name]}")
    return rows


def run_proficiency(client: GatewayClient, args: argparse.Namespace) -> int:
    """Seed every pair; say which were refused and why. Exit 1 if any was."""
    rows = read_pairs(args.pairs)
    refused = 0
    for number, row in enumerate(rows, start=2):
        request = gateway_pb2.SeedProficiencyTestRequest(
            probe_image=(args.pairs.parent / row["probe"]).read_bytes(),
            candidate_image=(args.pairs.parent / row["candidate"]).read_bytes(),
            same_person=ANSWERS[row["same"].strip().lower()],
            case_number=row["case"].strip(),
            purpose=args.purpose,
            shown_searcher=args.searcher,
            shown_subject_id=row["subject"].strip(),
            source=(row.get("source") or f"{args.pairs.name} line {number}").strip(),
            shown_metadata={"source": args.shown_source} if args.shown_source else {},
        )
        try:
            seeded = client.seed_proficiency_test(request)
        except grpc.RpcError as error:
            refused += 1
            print(f"line {number}: refused: {error.details()}")  # type: ignore[attr-defined]
            continue
        print(f"line {number}: seeded as search {seeded.search_id} (case {row['case'].strip()})")
    print(f"{len(rows) - refused} of {len(rows)} test(s) seeded")
    return 1 if refused else 0
