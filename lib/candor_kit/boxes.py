"""Face boxes: which of the faces one detector finds is the face another detector found."""

from __future__ import annotations

from collections.abc import Sequence

from candor.common.v1 import common_pb2

#: Two detectors' boxes of one face overlap at least this much (intersection over union): their
#: boxes differ in shape (YuNet's is taller than dlib's square) but not in place.
SAME_FACE_OVERLAP = 0.3


def overlap(a: common_pb2.Box, b: common_pb2.Box) -> float:
    """Intersection over union of two boxes."""
    width = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    height = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    inter = max(0, width) * max(0, height)
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def same_face(faces: Sequence[common_pb2.DetectedFace], box: common_pb2.Box) -> int | None:
    """The index of the face whose box overlaps ``box`` most, if it overlaps enough; else None."""
    scored = [(overlap(face.box, box), index) for index, face in enumerate(faces)]
    best, index = max(scored, default=(0.0, None))
    return index if best >= SAME_FACE_OVERLAP else None
