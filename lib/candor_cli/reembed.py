"""``candor gallery reembed --to MODEL``: rebuild the gallery with another model, then switch.

The new model's detectors and embedders must be running beside the old ones. The command asks the
gateway which records the new model's collection lacks, reads each record's photo from the photo
store (or, for a record enrolled before the store kept photos, from its reference: an imported
record's import source folder and its path there, or the path it was enrolled from), checks the
photo is the one enrolled (SHA-256), and imports those photos with the new model. Searches keep
using the old model meanwhile, and new enrolments go to both. Records enrolled during the run are
picked up by the next round. Once the new collection holds every record, the gallery switches to
it in one step, unless some records could not be re-embedded (no stored photo, or the new model
finds no face in it): those are listed, and the switch needs ``--leave-out-missing`` to go ahead
without them.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import grpc

from candor.ingest.v1 import ingest_pb2
from candor.matcher.v1 import matcher_pb2
from candor_cli.gallery import REASONS, SourcePhoto, send_photos
from candor_client import GatewayClient

#: Rounds of "list what is missing, import it": later rounds catch records enrolled meanwhile.
MAX_ROUNDS = 4


@dataclass(frozen=True)
class LeftOut:
    """A record that could not be re-embedded, and why."""

    record: matcher_pb2.GalleryRecord
    why: str


class PhotoFinder:
    """Finds a record's photo in the photo store, or else from its reference, checking it is the
    photo that was enrolled."""

    def __init__(self, client: GatewayClient) -> None:
        self._client = client
        self._roots: dict[str, Path | None] = {}

    def _root(self, import_id: str) -> Path | None:
        """The folder an import's references are relative to (None when the import is unknown)."""
        if import_id not in self._roots:
            try:
                source = Path(self._client.import_status(import_id).record.source)
            except grpc.RpcError:
                self._roots[import_id] = None
            else:
                self._roots[import_id] = source if source.is_dir() else source.parent
        return self._roots[import_id]

    def stored(self, record: matcher_pb2.GalleryRecord) -> bytes | None:
        """The record's photo from the photo store, or None when the store holds no such photo."""
        try:
            photo = self._client.record_photo(record.record_id)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                return None
            raise
        return photo.image if photo.sha256 == record.image_sha256 else None

    def find(self, record: matcher_pb2.GalleryRecord) -> bytes | Path | str:
        """The photo (from the store) or its path, or why there is none."""
        stored = self.stored(record)
        if stored is not None:
            return stored
        if not record.image_ref:
            return "no photo is stored and no photo reference was kept with the record"
        if record.origin:
            root = self._root(record.origin.partition("/")[0])
            if root is None:
                return f"the import {record.origin.partition('/')[0]} it came from is unknown"
            path = root / record.image_ref
        else:
            path = Path(record.image_ref)
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror or exc}"
        if digest != record.image_sha256:
            return f"{path} is no longer the photo that was enrolled (SHA-256 differs)"
        return path


def _round_id(model_id: str, records: list[matcher_pb2.GalleryRecord]) -> str:
    """The same missing records re-embed under the same import id, so a killed run resumes."""
    listing = "\n".join([model_id, *sorted(record.record_id for record in records)])
    return f"rmb-{hashlib.sha256(listing.encode('utf-8')).hexdigest()[:24]}"


def reembed_round(
    client: GatewayClient, model_id: str, records: list[matcher_pb2.GalleryRecord], progress: bool
) -> list[LeftOut]:
    """Import the photos of ``records`` with the new model; returns the ones left out."""
    finder = PhotoFinder(client)
    photos: list[SourcePhoto] = []
    sent: list[matcher_pb2.GalleryRecord] = []
    left_out: list[LeftOut] = []
    for record in records:
        found = finder.find(record)
        if isinstance(found, str):
            left_out.append(LeftOut(record, found))
            continue
        photos.append(
            SourcePhoto(
                item=len(photos),
                subject_id=record.subject_id,
                path=found if isinstance(found, Path) else Path("photo-store") / record.record_id,
                metadata=dict(record.metadata),
                image_ref=record.image_ref,
                keep_origin=record.origin,
                image=found if isinstance(found, bytes) else None,
            )
        )
        sent.append(record)
    if not photos:
        return left_out
    import_id = _round_id(model_id, records)
    source = f"re-embedding of {len(photos)} gallery records into {model_id}"
    send_photos(client, photos, import_id, source, Path("/"), progress=progress, model_id=model_id)
    for result in client.import_results(import_id, problems_only=True):
        what = "failed" if result.outcome == ingest_pb2.OUTCOME_FAILED else REASONS[result.reason]
        left_out.append(LeftOut(sent[result.item.item], f"{what}: {result.detail}"))
    return left_out


def run_reembed(
    client: GatewayClient,
    model_id: str,
    reason: str,
    switch: bool = True,
    leave_out_missing: bool = False,
    progress: bool = True,
    out: TextIO = sys.stdout,
) -> int:
    """Re-embed the gallery into ``model_id`` and switch to it; 0 once switched (or, with
    ``switch`` false, once built), 1 when records are missing and may not be left out."""
    models = client.start_reembed(model_id)
    print(
        f"re-embedding the gallery from {models.active.id} {models.active.version} "
        f"into {models.target.id} {models.target.version}",
        file=out,
    )
    left_out: dict[str, LeftOut] = {}
    for round_number in range(1, MAX_ROUNDS + 1):
        missing = [record for record in client.reembed_work(model_id) if record.record_id not in left_out]
        if not missing:
            break
        if round_number == MAX_ROUNDS:
            print(f"  records were still arriving after {MAX_ROUNDS - 1} rounds: run the command again", file=out)
            return 1
        print(f"  round {round_number}: {len(missing)} records to re-embed", file=out)
        left_out |= {gone.record.record_id: gone for gone in reembed_round(client, model_id, missing, progress)}
    for gone in left_out.values():
        print(f"  - left out {gone.record.record_id} ({gone.record.subject_id}): {gone.why}", file=out)
    if not switch:
        print(f"built: {models.target.id} holds every record but {len(left_out)}; not switched", file=out)
        return 0
    if left_out and not leave_out_missing:
        print(
            f"not switched: {len(left_out)} records could not be re-embedded; fix their photos and run again, "
            "or switch without them with --leave-out-missing",
            file=out,
        )
        return 1
    switched = client.switch_model(model_id, reason, sorted(left_out))
    print(
        f"switched: searches now use {switched.active.id} {switched.active.version} "
        f"({switched.previous.id} {switched.previous.version} is kept); {len(left_out)} records left out",
        file=out,
    )
    return 0


def print_models(models: matcher_pb2.GalleryModels, out: TextIO = sys.stdout) -> None:
    """The gallery's model record, for people."""
    for label, ref in (("active", models.active), ("re-embedding into", models.target), ("previous", models.previous)):
        if ref.id:
            print(f"{label:<18} {ref.id} {ref.version} ({ref.dimension}-d {ref.metric})", file=out)
    if not models.active.id:
        print("the gallery has no model yet (nothing is enrolled)", file=out)


def run_model_command(client: GatewayClient, args: argparse.Namespace) -> int:
    """``candor gallery reembed`` and ``candor gallery models``."""
    if args.action == "models":
        print_models(client.gallery_models())
        return 0
    if not args.no_switch and not (args.reason or "").strip():
        print("candor gallery reembed: --reason is needed to switch (or --no-switch to build only)", file=sys.stderr)
        return 2
    return run_reembed(
        client, args.model_id, args.reason or "", not args.no_switch, args.leave_out_missing, not args.quiet
    )
