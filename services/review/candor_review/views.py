"""What the pages show, computed from the gateway's messages: photos as figures with their face
boxes (and a zoomed view box), candidate statuses and decisions in words."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from candor.gateway.v1 import gateway_pb2

#: The image formats a page may embed, by Pillow's name for them.
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp"}
#: How far around the face a zoomed view reaches, as a multiple of the face box.
ZOOM_MARGIN = 1.8
STATUS_WORDS = {
    gateway_pb2.CANDIDATE_STATUS_UNSPECIFIED: "",
    gateway_pb2.CANDIDATE_STATUS_PENDING: "pending",
    gateway_pb2.CANDIDATE_STATUS_LEAD: "lead",
    gateway_pb2.CANDIDATE_STATUS_REJECTED: "rejected",
    gateway_pb2.CANDIDATE_STATUS_DISPUTED: "disputed",
}
DECISION_WORDS = {gateway_pb2.DECISION_CONFIRM: "confirm", gateway_pb2.DECISION_REJECT: "reject"}


@dataclass(frozen=True)
class Figure:
    """A photo as an inline SVG: the picture, the face's box, and the part of it in view."""

    data_uri: str
    width: int
    height: int
    #: x, y, width, height of the face box; None when not known.
    box: tuple[int, int, int, int] | None
    view_box: str
    #: The box outline's width in photo pixels, so it reads the same at any zoom.
    stroke: float
    sha256: str


def figure(photo: gateway_pb2.Photo, zoom: bool) -> Figure | None:
    """The photo as a figure; None when it is not an image a browser shows."""
    try:
        with Image.open(io.BytesIO(photo.image)) as image:
            width, height = image.size
            media_type = MEDIA_TYPES.get(image.format or "")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        return None
    if media_type is None:
        return None
    box = None
    if photo.HasField("face_box") and photo.face_box.width > 0 and photo.face_box.height > 0:
        b = photo.face_box
        box = (b.x, b.y, b.width, b.height)
    view = (0.0, 0.0, float(width), float(height))
    if zoom and box is not None:
        view = _around(box, width, height)
    data_uri = f"data:{media_type};base64,{base64.b64encode(photo.image).decode()}"
    stroke = max(2.0, round(max(view[2], view[3]) / 150, 1))
    return Figure(data_uri, width, height, box, " ".join(f"{v:g}" for v in view), stroke, photo.sha256)


def _around(box: tuple[int, int, int, int], width: int, height: int) -> tuple[float, float, float, float]:
    """A square view centred on the face box, ZOOM_MARGIN times its size, kept inside the photo."""
    x, y, w, h = box
    side = min(max(w, h) * ZOOM_MARGIN, width, height)
    left = min(max(x + w / 2 - side / 2, 0.0), width - side)
    top = min(max(y + h / 2 - side / 2, 0.0), height - side)
    return (round(left, 1), round(top, 1), round(side, 1), round(side, 1))


#: An error page's heading, by its HTTP status: what happened, in a word or two.
ERROR_TITLES = {
    400: "Check the request",
    401: "Sign in first",
    403: "Refused",
    404: "Not found",
    405: "Not allowed",
    409: "Not possible now",
    413: "Too large",
    429: "Too many requests",
    503: "Unavailable",
    504: "The gateway did not answer in time",
}


def error_title(status: int) -> str:
    """The heading of an error page with ``status``."""
    return ERROR_TITLES.get(status, "Something failed")
