"""Reading an import's source: a folder of <subject>/<image> or a CSV manifest, and its stable id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from candor.gateway.v1 import gateway_pb2
from candor.ingest.v1 import ingest_pb2
from candor_cli.gallery import SourceError, import_id_for, read_source
from candor_gateway.imports import Tally


def _folder(root: Path) -> Path:
    for name in ("B-200/front.jpg", "A-100/side.png", "A-100/front.jpg", ".hidden/x.jpg", "A-100/.DS_Store"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    return root


def test_a_folder_is_read_in_a_stable_order_with_the_folder_as_subject(tmp_path: Path) -> None:
    photos = read_source(_folder(tmp_path))
    assert [(p.item, p.subject_id, p.path.relative_to(tmp_path).as_posix()) for p in photos] == [
        (0, "A-100", "A-100/front.jpg"),
        (1, "A-100", "A-100/side.png"),
        (2, "B-200", "B-200/front.jpg"),
    ]


def test_a_manifest_keeps_its_booking_numbers_and_metadata(tmp_path: Path) -> None:
    manifest = tmp_path / "gallery.csv"
    manifest.write_text(
        "subject_id,image_path,source,booked\nBK-1,photos/a.jpg,county,2024-01-02\nBK-2,/abs/b.jpg,city,\n"
    )
    first, second = read_source(manifest)
    assert (first.subject_id, first.path, first.metadata) == (
        "BK-1",
        tmp_path / "photos/a.jpg",
        {"source": "county", "booked": "2024-01-02"},
    )
    assert (second.subject_id, second.path) == ("BK-2", Path("/abs/b.jpg"))
    headerless = tmp_path / "plain.csv"
    headerless.write_text("BK-3,c.jpg,extra\n")
    [only] = read_source(headerless)
    assert (only.subject_id, only.metadata) == ("BK-3", {"field3": "extra"})


def test_the_import_id_follows_the_listing(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    first = import_id_for(read_source(root))
    assert first == import_id_for(read_source(root))
    (root / "C-300").mkdir()
    (root / "C-300" / "new.jpg").write_bytes(b"x")
    assert import_id_for(read_source(root)) != first


def test_a_source_that_names_nothing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        read_source(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("only-one-column\n")
    with pytest.raises(SourceError, match="subject_id and image_path"):
        read_source(bad)


def test_the_tally_keeps_each_photos_latest_result_and_counts_reasons() -> None:
    tally = Tally(5)

    def result(item: int, outcome: int, reason: int = 0) -> ingest_pb2.ItemResult:
        return ingest_pb2.ItemResult(item=ingest_pb2.ItemRef(item=item), outcome=outcome, reason=reason)

    tally.add(result(0, ingest_pb2.OUTCOME_ENROLLED))
    tally.add(result(1, ingest_pb2.OUTCOME_FAILED))
    tally.add(result(1, ingest_pb2.OUTCOME_ENROLLED))  # resumed later and enrolled: replaces the failure
    tally.add(result(2, ingest_pb2.OUTCOME_REJECTED, ingest_pb2.REJECT_REASON_BLURRY))
    tally.add(result(3, ingest_pb2.OUTCOME_REJECTED, ingest_pb2.REJECT_REASON_BLURRY))
    tally.add(result(99, ingest_pb2.OUTCOME_ENROLLED))  # outside the import: ignored
    status = tally.status(ingest_pb2.ImportRecord(total=5), with_done_items=True)
    assert (status.done, status.enrolled, status.rejected, status.failed) == (4, 2, 2, 0)
    assert list(status.rejected_by_reason) == [gateway_pb2.ReasonCount(reason=ingest_pb2.REJECT_REASON_BLURRY, count=2)]
    done = np.unpackbits(np.frombuffer(status.done_items, dtype=np.uint8), bitorder="little")[:5]
    assert done.tolist() == [1, 1, 1, 1, 0]
