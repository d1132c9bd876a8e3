"""The pages of the shard's files that building the candidate index read are handed back to the
kernel, and the gallery answers and enrols exactly as before. A real Qdrant Edge shard, reopened
as a restarted matcher opens it; resident pages read from /proc/self/smaps."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from candor_matcher import EdgeBackend, Gallery, GalleryModel
from candor_matcher.page_out import mapped_ranges

SFACE = GalleryModel(id="sface", version="1", metric="cosine", dimension=128)
FACES = 20_000


def resident_kib(folder: Path) -> int:
    """This process's resident pages of files under ``folder``, in KiB."""
    prefix, total, inside = f"{folder.resolve()}/", 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].endswith(":"):  # a mapping's header line
            inside = len(fields) >= 6 and fields[5].startswith(prefix)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_the_shard_pages_the_index_build_read_are_handed_back_and_the_gallery_answers_as_before(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(FACES, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    gallery = Gallery(EdgeBackend(tmp_path / "gallery", index_train_at=2000))
    collection = gallery.index_for(SFACE)._collection
    names = [str(uuid.UUID(int=n + 1)) for n in range(FACES)]
    for first in range(0, FACES, 2000):
        block = range(first, first + 2000)
        collection.upsert([(names[n], vectors[n].tolist(), {"subject_id": f"S{n}"}) for n in block])
    collection.optimize()
    probes = vectors[:20] + rng.normal(size=(20, 128)).astype(np.float32) * 0.1
    before = [[h.record_id for h in collection.nearest(p.tolist(), 10, -1.0)] for p in probes]
    gallery.close()

    reopened = Gallery(EdgeBackend(tmp_path / "gallery", index_train_at=2000)).index_for(SFACE)
    collection = reopened._collection
    assert collection.wait_for_index(60) and collection._index.live == FACES
    vector_kib = vectors.nbytes // 1024
    resident = resident_kib(tmp_path / "gallery")
    assert resident < vector_kib // 5, f"{resident} KiB of the shard resident after the build ({vector_kib} KiB)"

    assert [[h.record_id for h in collection.nearest(p.tolist(), 10, -1.0)] for p in probes] == before
    new = rng.normal(size=128).astype(np.float32)
    new /= np.linalg.norm(new)
    reopened.enroll("NEW", "f" * 64, new.tolist(), {})
    assert reopened.search(new.tolist(), limit=1, max_distance=0.01)[0].subject_id == "NEW"
    assert len(reopened._collection.origins(before[0])) == 10, "the shard's payloads read back from disk"


def test_only_the_folders_own_mappings_are_named() -> None:
    maps = (
        "7f00-7f10 r--s 00000000 00:2a 11 /data/gallery/sface/shard/matrix.dat\n"
        "7f10-7f20 rw-p 00000000 00:00 0 \n"
        "7f20-7f30 r--s 00000000 00:2a 12 /data/gallery-old/x.dat\n"
        "7f30-7f40 r--p 00000000 00:2a 13 /data/gallery/sface/shard/segments/a b.dat\n"
    )
    assert mapped_ranges(Path("/data/gallery"), maps) == [(0x7F00, 0x7F10), (0x7F30, 0x7F40)]
