"""The comparison view of the review desk: how the probe and a candidate are shown side by side,
aligned on their eyes, overlaid or flickered, at which zoom and pan, and with or without the face
box. Everything is computed here, on the server, as SVG view boxes and transforms, so the page
works without any script; the desk's own script (static/compare.js) only makes the same changes
live (wheel zoom, drag pan, an opacity slider) and keeps them in the page's links.

A :class:`Look` is the reviewer's choice of view, read from the query string and carried in every
link and form of the page, so a decision, the next candidate or a sign-in after an expired session
comes back to the same view.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from PIL import Image, UnidentifiedImageError

from candor.gateway.v1 import gateway_pb2

#: The image formats a page may embed, by Pillow's name for them.
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp"}
#: The ways of comparing two faces.
MODES = {
    "side": "Side by side",
    "aligned": "Aligned on the eyes",
    "overlay": "Overlay",
    "flicker": "Flicker",
}
#: Zoom levels: 0 is the whole photo, 1 the face with some of its surroundings, then closer.
ZOOMS = {0: "Whole photo", 1: "Face", 2: "2 times", 4: "4 times"}
#: How far around the face the face zoom reaches, as a multiple of the face box.
ZOOM_MARGIN = 1.8
#: One pan step, as a share of the view's side.
PAN_STEP = 0.25
#: The furthest a view pans from the face, in steps.
MAX_PAN = 8
#: The square canvas aligned faces are drawn on, and where their eyes land on it.
CANVAS = 400.0
LEFT_EYE = (140.0, 170.0)
RIGHT_EYE = (260.0, 170.0)
#: The overlay's candidate opacities offered as links (the slider, with the script, takes any).
OPACITIES = (0, 25, 50, 75, 100)


class LookError(ValueError):
    """A view setting the desk does not take; the message says which."""


@dataclass(frozen=True)
class Look:
    """How the reviewer looks at the probe and one candidate."""

    mode: str = "side"
    zoom: int = 1
    dx: int = 0
    dy: int = 0
    box: bool = True
    opacity: int = 50

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Look:
        """The look a query string names; LookError for a value outside the choices."""
        mode = params.get("view", "side")
        if mode not in MODES:
            raise LookError("the view is side, aligned, overlay or flicker")
        numbers = {}
        for name, default, low, high in (
            ("zoom", 1, 0, 4),
            ("dx", 0, -MAX_PAN, MAX_PAN),
            ("dy", 0, -MAX_PAN, MAX_PAN),
            ("opacity", 50, 0, 100),
        ):
            text = params.get(name, str(default))
            try:
                value = int(text)
            except ValueError:
                raise LookError(f"{name} is a whole number from {low} to {high}") from None
            if not low <= value <= high or len(text) > 4:
                raise LookError(f"{name} is a whole number from {low} to {high}")
            numbers[name] = value
        if numbers["zoom"] not in ZOOMS:
            raise LookError("the zoom is 0 (whole photo), 1 (face), 2 or 4")
        return cls(mode, box=params.get("box") != "off", **numbers)

    def query(self, **changes: object) -> str:
        """This look (with some settings changed) as a query string, defaults left out."""
        look = replace(self, **changes)  # type: ignore[arg-type]
        fields = {
            "view": "" if look.mode == "side" else look.mode,
            "zoom": "" if look.zoom == 1 else str(look.zoom),
            "dx": str(look.dx) if look.dx else "",
            "dy": str(look.dy) if look.dy else "",
            "box": "" if look.box else "off",
            "opacity": "" if look.opacity == 50 else str(look.opacity),
        }
        return urlencode({name: value for name, value in fields.items() if value})

    @property
    def aligned(self) -> bool:
        """Whether the faces are drawn aligned on their eyes (aligned, overlay and flicker)."""
        return self.mode != "side"


@dataclass(frozen=True)
class Shown:
    """A photo ready to draw: the picture, its size, the face box and eyes, and how it is placed."""

    data_uri: str
    width: int
    height: int
    #: x, y, width, height of the face box; None when not known.
    box: tuple[int, int, int, int] | None
    #: The two eye centres, the image's left first; None when not known.
    eyes: tuple[tuple[float, float], tuple[float, float]] | None
    sha256: str

    @property
    def can_align(self) -> bool:
        """Whether the photo can be drawn aligned on its eyes."""
        return self.eyes is not None and self.eyes[0] != self.eyes[1]

    def transform(self) -> str:
        """The SVG transform that puts the eyes at LEFT_EYE and RIGHT_EYE on the canvas."""
        assert self.eyes is not None
        (x1, y1), (x2, y2) = self.eyes
        scale = (RIGHT_EYE[0] - LEFT_EYE[0]) / math.hypot(x2 - x1, y2 - y1)
        angle = -math.atan2(y2 - y1, x2 - x1)
        a, b = scale * math.cos(angle), scale * math.sin(angle)
        # x' = a x - b y + e, y' = b x + a y + f, with (x1, y1) landing on LEFT_EYE.
        e = LEFT_EYE[0] - (a * x1 - b * y1)
        f = LEFT_EYE[1] - (b * x1 + a * y1)
        return f"matrix({a:.6f} {b:.6f} {-b:.6f} {a:.6f} {e:.3f} {f:.3f})"

    def view_box(self, look: Look) -> str:
        """The part of the photo (or of the aligned canvas) in view."""
        if look.aligned and self.can_align:
            side = CANVAS / max(look.zoom, 1)
            centre = (CANVAS / 2 + look.dx * PAN_STEP * side, CANVAS / 2 + look.dy * PAN_STEP * side)
            return _box_text(centre[0] - side / 2, centre[1] - side / 2, side, side)
        if look.zoom == 0 or self.box is None:
            return _box_text(0, 0, self.width, self.height)
        x, y, w, h = self.box
        side = max(w, h) * ZOOM_MARGIN / look.zoom
        centre_x = x + w / 2 + look.dx * PAN_STEP * side
        centre_y = y + h / 2 + look.dy * PAN_STEP * side
        if look.dx == 0 and look.dy == 0 and side <= min(self.width, self.height):
            # Unpanned, the view stays inside the photo: no grey band beside a face at the edge.
            centre_x = min(max(centre_x, side / 2), self.width - side / 2)
            centre_y = min(max(centre_y, side / 2), self.height - side / 2)
        return _box_text(centre_x - side / 2, centre_y - side / 2, side, side)

    def stroke(self, look: Look) -> float:
        """The face box outline's width in the drawing's units, so it reads the same at any zoom."""
        side = float(self.view_box(look).split()[2])
        if look.aligned and self.can_align:
            # The box is drawn inside the transform: its units are the photo's pixels.
            (x1, y1), (x2, y2) = self.eyes  # type: ignore[misc]
            side *= math.hypot(x2 - x1, y2 - y1) / (RIGHT_EYE[0] - LEFT_EYE[0])
        return max(0.5, round(side / 150, 2))


def _box_text(x: float, y: float, width: float, height: float) -> str:
    return " ".join(f"{round(v, 1):g}" for v in (x, y, width, height))


def shown(photo: gateway_pb2.Photo) -> Shown | None:
    """The photo ready to draw; None when it is not an image a browser shows."""
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
    eyes = None
    if len(photo.eyes) == 2:
        eyes = ((photo.eyes[0].x, photo.eyes[0].y), (photo.eyes[1].x, photo.eyes[1].y))
    data_uri = f"data:{media_type};base64,{base64.b64encode(photo.image).decode()}"
    return Shown(data_uri, width, height, box, eyes, photo.sha256)
