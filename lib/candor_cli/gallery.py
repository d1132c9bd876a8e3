"""``candor gallery import|status``: bulk enrolment from a folder or a CSV manifest.

The source is read here and every photo is sent to the gateway, which queues it for the import
workers. The import id derives from the source's listing, so running the same command again after
a kill resumes the import: photos with a result are skipped, the others are sent again (a photo still
queued is stored once). Enrolment itself is idempotent, so importing a source twice changes nothing.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import grpc
import numpy as np
from google.protobuf.json_format import MessageToDict
from tqdm import tqdm

from candor.gateway.v1 import gateway_pb2
from candor.ingest.v1 import ingest_pb2
from candor_client import GatewayClient

#: What one SubmitImportItems call carries at most (under the 16 MiB message limit); a bigger
#: photo is not sent, and the gateway records it as too large (its limit is 12 MiB by default).
BATCH_BYTES = 15 << 20
BATCH_ITEMS = 64
#: How often progress is read while the workers finish.
POLL_S = 1.0
HIDDEN = (".", "_")


class SourceError(Exception):
    """The source cannot be read as a folder of <subject>/<image> or a CSV manifest."""


@dataclass(frozen=True)
class SourcePhoto:
    """One photo of the source: its number, subject, file and metadata."""

    item: int
    subject_id: str
    path: Path
    metadata: dict[str, str] = field(default_factory=dict)
    #: The reference the gallery keeps (default: the path, relative to the source's folder).
    image_ref: str = ""
    #: When the photo re-embeds an existing record: that record's origin, kept.
    keep_origin: str = ""
    #: The photo itself, when it comes from the photo store rather than from ``path``.
    image: bytes | None = None

    @property
    def line(self) -> str:
        """The photo's line in the listing the import id derives from."""
        return json.dumps([self.subject_id, str(self.path), self.metadata], sort_keys=True)


def read_source(source: Path) -> list[SourcePhoto]:
    """Every photo a folder (``<subject>/<image>``) or a CSV manifest
    (``subject_id,image_path[,metadata...]``, paths relative to the manifest) names, in a stable order."""
    if source.is_dir():
        photos = [
            (folder.name, image)
            for folder in sorted(source.iterdir())
            if folder.is_dir() and not folder.name.startswith(HIDDEN)
            for image in sorted(folder.iterdir())
            if image.is_file() and not image.name.startswith(HIDDEN)
        ]
        found = [SourcePhoto(i, subject, path) for i, (subject, path) in enumerate(photos)]
    elif source.is_file():
        found = list(_read_manifest(source))
    else:
        raise SourceError(f"{source} is neither a folder nor a CSV manifest")
    if not found:
        raise SourceError(f"{source} names no photos")
    return found


def _read_manifest(manifest: Path) -> Iterator[SourcePhoto]:
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        return
    header = [cell.strip() for cell in rows[0]]
    named = header[:2] == ["subject_id", "image_path"]
    names = header[2:] if named else []
    for number, row in enumerate(rows[1:] if named else rows):
        if len(row) < 2:
            raise SourceError(f"{manifest}: row {number + 1 + named} needs subject_id and image_path")
        extra = [cell.strip() for cell in row[2:]]
        keys = names if len(names) == len(extra) else [f"field{i + 3}" for i in range(len(extra))]
        path = Path(row[1].strip())
        yield SourcePhoto(
            number,
            row[0].strip(),
            path if path.is_absolute() else manifest.parent / path,
            dict(zip(keys, extra, strict=True)),
        )


def import_id_for(photos: list[SourcePhoto]) -> str:
    """A stable id for a source's listing: the same listing resumes the same import."""
    digest = hashlib.sha256("\n".join(photo.line for photo in photos).encode("utf-8")).hexdigest()
    return f"imp-{digest[:24]}"


def _batches(photos: list[SourcePhoto], root: Path) -> Iterator[list[gateway_pb2.ImportItem]]:
    """The photos as ImportItems, read from disk, grouped under the message limit."""
    batch: list[gateway_pb2.ImportItem] = []
    size = 0
    for photo in photos:
        item = gateway_pb2.ImportItem(
            item=photo.item, subject_id=photo.subject_id, metadata=photo.metadata, keep_origin=photo.keep_origin
        )
        try:
            item.image_ref = photo.image_ref or ("" if photo.image is not None else str(photo.path.relative_to(root)))
        except ValueError:
            item.image_ref = str(photo.path)
        try:
            if photo.image is not None:
                item.image = photo.image
            elif photo.path.stat().st_size > BATCH_BYTES:  # the gateway records it as too large, unsent
                item.file_bytes = photo.path.stat().st_size
            else:
                item.image = photo.path.read_bytes()
        except OSError as exc:
            item.unreadable = f"cannot read the file: {exc.strerror or exc}"
        if batch and (size + len(item.image) > BATCH_BYTES or len(batch) == BATCH_ITEMS):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += len(item.image)
    if batch:
        yield batch


class Progress:
    """A progress bar of photos with a result, with rate and ETA (tqdm), on stderr."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self._bar = tqdm(
            total=total, initial=done, unit="photo", disable=None if enabled else True, mininterval=1.0, file=sys.stderr
        )
        self._done = done

    def show(self, status: gateway_pb2.ImportStatus) -> None:
        """Move the bar to the status's count."""
        self._bar.set_postfix(
            enrolled=status.enrolled,
            dup=status.duplicates,
            rejected=status.rejected,
            failed=status.failed,
            refresh=False,
        )
        self._bar.update(status.done - self._done)
        self._done = status.done

    def close(self) -> None:
        """Finish the bar."""
        self._bar.close()


def run_import(
    client: GatewayClient,
    source: Path,
    import_id: str | None = None,
    wait: bool = True,
    progress: bool = True,
) -> gateway_pb2.ImportStatus:
    """Start (or resume) the import of ``source``, send its photos, and wait for every result."""
    photos = read_source(source)
    root = source if source.is_dir() else source.parent
    return send_photos(client, photos, import_id or import_id_for(photos), str(source.resolve()), root, wait, progress)


def send_photos(
    client: GatewayClient,
    photos: list[SourcePhoto],
    import_id: str,
    source: str,
    root: Path,
    wait: bool = True,
    progress: bool = True,
    model_id: str = "",
) -> gateway_pb2.ImportStatus:
    """Start (or resume) an import of ``photos`` (read from under ``root``; ``source`` names them),
    send those without a result yet, and wait for every result unless told not to."""
    status = client.start_import(import_id, source, len(photos), model_id)
    done = np.unpackbits(np.frombuffer(status.done_items, dtype=np.uint8), bitorder="little")[: len(photos)]
    waiting = [photo for photo in photos if not (photo.item < len(done) and done[photo.item])]
    bar = Progress(len(photos), int(status.done), progress)
    last_poll = time.monotonic()
    try:
        for batch in _batches(waiting, root):
            while True:
                try:
                    client.submit_import(import_id, batch)
                    break
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:  # type: ignore[attr-defined]
                        raise
                    time.sleep(POLL_S)  # the queue is full: let the workers catch up
                    bar.show(client.import_status(import_id))
            if time.monotonic() - last_poll >= POLL_S:
                bar.show(client.import_status(import_id))
                last_poll = time.monotonic()
        status = client.import_status(import_id)
        while wait and status.done < status.record.total:
            bar.show(status)
            time.sleep(POLL_S)
            status = client.import_status(import_id)
        bar.show(status)
    finally:
        bar.close()
    return status


REASONS = {
    value: name.removeprefix("REJECT_REASON_").lower().replace("_", " ")
    for name, value in ingest_pb2.RejectReason.items()
}


def print_report(
    client: GatewayClient, status: gateway_pb2.ImportStatus, out: TextIO = sys.stdout
) -> list[ingest_pb2.ItemResult]:
    """The import's report: counts, then every rejected or failed photo with its reason."""
    record = status.record
    state = "finished" if record.HasField("finished_at") else f"running ({status.done} of {record.total} done)"
    print(f"import {record.import_id}: {state}", file=out)
    print(f"  source      {record.source}", file=out)
    print(f"  photos      {record.total}", file=out)
    print(f"  enrolled    {status.enrolled}", file=out)
    print(f"  duplicates  {status.duplicates} (already enrolled: skipped)", file=out)
    print(f"  rejected    {status.rejected}", file=out)
    for count in status.rejected_by_reason:
        print(f"    {REASONS[count.reason]:<14} {count.count}", file=out)
    print(f"  failed      {status.failed} (dead-lettered)", file=out)
    problems = client.import_results(record.import_id, problems_only=True) if status.rejected or status.failed else []
    for result in problems:
        what = "failed" if result.outcome == ingest_pb2.OUTCOME_FAILED else REASONS[result.reason]
        print(
            f"  - #{result.item.item} {result.item.subject_id} {result.item.image_ref}: {what}: {result.detail}",
            file=out,
        )
    return problems


def write_report(path: Path, status: gateway_pb2.ImportStatus, problems: list[ingest_pb2.ItemResult]) -> None:
    """The report as JSON: the status's counts and each problem."""
    report = MessageToDict(status, preserving_proto_field_name=True)
    report.pop("done_items", None)
    report["problems"] = [MessageToDict(p, preserving_proto_field_name=True) for p in problems]
    path.write_text(json.dumps(report, indent=2))


def add_gallery_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    """``candor gallery import|status|reembed|models``."""
    gallery = commands.add_parser("gallery", help="bulk enrolment").add_subparsers(dest="action", required=True)
    start = gallery.add_parser("import", parents=[common], help="enrol a folder of <subject>/<image> or a CSV manifest")
    start.add_argument("source", type=Path)
    start.add_argument("--import-id", help="resume or name an import (default: derived from the source's listing)")
    start.add_argument("--no-wait", action="store_true", help="return once every photo is queued")
    start.add_argument("--report", type=Path, help="also write the final report here as JSON")
    start.add_argument("--quiet", action="store_true", help="no progress bar")
    status = gallery.add_parser("status", parents=[common], help="progress of a running or finished import")
    status.add_argument("import_id")
    status.add_argument("--report", type=Path, help="also write the report here as JSON")
    reembed = gallery.add_parser(
        "reembed", parents=[common], help="rebuild the gallery with another model, then switch searches to it"
    )
    reembed.add_argument("--to", required=True, dest="model_id", help="the new model's id (its embedder must run)")
    reembed.add_argument("--reason", help="why the gallery changes model, for the audit record (needed to switch)")
    reembed.add_argument("--no-switch", action="store_true", help="build the new collection but do not switch")
    reembed.add_argument(
        "--leave-out-missing", action="store_true", help="switch even if some records could not be re-embedded"
    )
    reembed.add_argument("--quiet", action="store_true", help="no progress bar")
    gallery.add_parser("models", parents=[common], help="which model the gallery searches with")


def run_gallery(client: GatewayClient, args: argparse.Namespace) -> int:
    """Run one ``candor gallery`` action; an import's exit code is 0 once every photo has a result."""
    if args.action == "import":
        status = run_import(client, args.source, args.import_id, wait=not args.no_wait, progress=not args.quiet)
    else:
        status = client.import_status(args.import_id)
    problems = print_report(client, status)
    if args.report:
        write_report(args.report, status, problems)
    # An import that was waited for fails (1) unless every photo got a result.
    waited = args.action == "import" and not args.no_wait
    return 1 if waited and status.done < status.record.total else 0
