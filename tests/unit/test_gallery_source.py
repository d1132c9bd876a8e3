"""Reading an import's source: a folder of <subject>/<image> or a CSV manifest, and its stable id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from candor.gateway.v1 import gateway_pb2
from candor.ingest.v1 import ingest_pb2
from candor_cli.gallery import SourceError, import_id_for, read_source
from candor_gateway.imports import Tally
from candor_kit.ingest import EARLIER_SOURCE, result_source, result_subject
from candor_kit.subjects import INGEST_RESULT_SOURCES


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


def result(item: int, outcome: int, reason: int = 0) -> ingest_pb2.ItemResult:
    return ingest_pb2.ItemResult(item=ingest_pb2.ItemRef(item=item), outcome=outcome, reason=reason)


def test_the_tally_keeps_each_photos_latest_result_and_counts_reasons() -> None:
    tally = Tally(5)
    assert tally.add(result(0, ingest_pb2.OUTCOME_ENROLLED), "match")
    assert tally.add(result(1, ingest_pb2.OUTCOME_FAILED), "match")
    # resumed later and enrolled: replaces the failure
    assert tally.add(result(1, ingest_pb2.OUTCOME_ENROLLED), "match")
    assert tally.add(result(2, ingest_pb2.OUTCOME_REJECTED, ingest_pb2.REJECT_REASON_BLURRY), "detect")
    assert tally.add(result(3, ingest_pb2.OUTCOME_REJECTED, ingest_pb2.REJECT_REASON_BLURRY), "embed")
    assert not tally.add(result(99, ingest_pb2.OUTCOME_ENROLLED), "match")  # outside the import: ignored
    status = tally.status(ingest_pb2.ImportRecord(total=5), with_done_items=True)
    assert (status.done, status.enrolled, status.rejected, status.failed) == (4, 2, 2, 0)
    assert list(status.rejected_by_reason) == [gateway_pb2.ReasonCount(reason=ingest_pb2.REJECT_REASON_BLURRY, count=2)]
    done = np.unpackbits(np.frombuffer(status.done_items, dtype=np.uint8), bitorder="little")[:5]
    assert done.tolist() == [1, 1, 1, 1, 0]


def test_a_result_from_earlier_in_the_line_or_an_outcome_its_source_cannot_give_does_not_stand() -> None:
    tally = Tally(4)
    assert tally.add(result(0, ingest_pb2.OUTCOME_ENROLLED), "match")
    assert not tally.add(result(0, ingest_pb2.OUTCOME_REJECTED, ingest_pb2.REJECT_REASON_NO_FACE), "detect")
    assert not tally.add(result(0, ingest_pb2.OUTCOME_FAILED), "gateway")
    assert tally.add(result(1, ingest_pb2.OUTCOME_REJECTED, ingest_pb2.REJECT_REASON_NO_FACE), "detect")
    for source in ("gateway", "detect", "embed"):  # only the matcher enrols or finds a duplicate
        assert not tally.add(result(1, ingest_pb2.OUTCOME_ENROLLED), source)
        assert not tally.add(result(1, ingest_pb2.OUTCOME_DUPLICATE), source)
    assert tally.add(result(2, ingest_pb2.OUTCOME_FAILED), "gateway")  # a stage given up on by the gateway...
    assert tally.add(result(2, ingest_pb2.OUTCOME_DUPLICATE), "match")  # ...that the matcher settled after all
    assert tally.add(result(3, ingest_pb2.OUTCOME_REJECTED, ingest_pb2.REJECT_REASON_TOO_LARGE), EARLIER_SOURCE)
    assert tally.subject("imp-00001", 3) == "candor.ingest.v1.result.imp-00001.3"
    assert tally.subject("imp-00001", 0) == "candor.ingest.v1.result.imp-00001.0.match"
    status = tally.status(ingest_pb2.ImportRecord(total=4), with_done_items=False)
    assert (status.enrolled, status.duplicates, status.rejected, status.failed) == (1, 1, 2, 0)
    assert [(r.reason, r.count) for r in status.rejected_by_reason] == [
        (ingest_pb2.REJECT_REASON_NO_FACE, 1),
        (ingest_pb2.REJECT_REASON_TOO_LARGE, 1),
    ]


def test_a_result_subject_names_its_source() -> None:
    for source in INGEST_RESULT_SOURCES:
        assert result_source(result_subject("imp-00001", 7, source)) == source
    assert result_source("candor.ingest.v1.result.imp-00001.7") == EARLIER_SOURCE
    assert result_source("candor.ingest.v1.result.imp-00001.7.reviewer") is None
    assert result_source("candor.ingest.v1.result.imp-00001.7.match.more") is None


def test_the_tally_refuses_and_counts_junk_a_result_naming_another_photo_or_an_outcome_its_sender_cannot_give() -> None:
    def refused(source: str) -> float:
        return REGISTRY.get_sample_value("candor_import_results_refused_total", {"source": source}) or 0.0

    before = {source: refused(source) for source in ("detect", "match", "unknown")}
    tally = Tally(4)
    named = ingest_pb2.ItemResult(
        item=ingest_pb2.ItemRef(import_id="imp-00001", item=1), outcome=ingest_pb2.OUTCOME_REJECTED
    )
    own = result_subject("imp-00001", 1, "detect")
    assert tally.take(own, b"\xff not a result") is None
    assert tally.take(result_subject("imp-00001", 2, "detect"), named.SerializeToString()) is None
    assert tally.take(own.replace(".detect", ".reviewer"), named.SerializeToString()) is None
    enrolled = ingest_pb2.ItemResult(item=named.item, outcome=ingest_pb2.OUTCOME_ENROLLED)
    assert tally.take(own, enrolled.SerializeToString()) is None
    assert tally.status(ingest_pb2.ImportRecord(total=4), with_done_items=False).done == 0
    assert {source: refused(source) - before[source] for source in before} == {"detect": 3, "match": 0, "unknown": 1}
    # The matcher's result on its own subject stands, and is what the tally gives back.
    assert tally.take(result_subject("imp-00001", 1, "match"), enrolled.SerializeToString()) == enrolled
    # What is told of a photo is the tally's outcome, whatever its sender stored on the subject since.
    told = ingest_pb2.ItemResult()
    tally.settle(told, "imp-00001", 1, enrolled.SerializeToString())
    assert (told.item.item, told.outcome) == (1, ingest_pb2.OUTCOME_ENROLLED)
    for stored in (b"\xff not a result", named.SerializeToString()):
        tally.settle(told, "imp-00001", 1, stored)
        assert (told.item.import_id, told.item.item, told.outcome) == ("imp-00001", 1, ingest_pb2.OUTCOME_ENROLLED)
        assert "refused as forged" in told.detail
