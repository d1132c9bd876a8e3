"""What the pages show, computed from the gateway's messages: the probe's quality figures with
plain warnings, candidate statuses and decisions in words, and error headings."""

from __future__ import annotations

import math
from dataclasses import dataclass

from candor.common.v1 import common_pb2
from candor.gateway.v1 import gateway_pb2
from candor_kit import conclusions

STATUS_WORDS = {
    gateway_pb2.CANDIDATE_STATUS_UNSPECIFIED: "",
    gateway_pb2.CANDIDATE_STATUS_PENDING: "pending",
    gateway_pb2.CANDIDATE_STATUS_LEAD: "lead",
    gateway_pb2.CANDIDATE_STATUS_REJECTED: "rejected",
    gateway_pb2.CANDIDATE_STATUS_DISPUTED: "disputed",
}
#: Each conclusion's words, by its wire value.
DECISION_WORDS = {conclusions.VALUES[name]: words for name, words in conclusions.WORDS.items()}


#: Below these, the probe's figures earn a plain warning (the desk's own cautious lines, not a
#: standard's): a face narrower than this many pixels; eyes closer than this (ISO/IEC 19794-5 asks
#: 90 px for a full frontal image; under 30 little detail is left to compare); sharpness (variance
#: of the Laplacian of the face at 150 px, the enrolment rule's measure) under this; and an
#: in-plane tilt over this many degrees.
SMALL_FACE_PX = 80
SMALL_EYE_DISTANCE_PX = 30
LOW_SHARPNESS = 50.0
TILT_DEGREES = 20.0
#: The nose this far off the eyes' midline (a share of the eyes' distance): a clearly turned head.
TURNED = 0.25


@dataclass(frozen=True)
class Quality:
    """The probe's quality figures as a reviewer reads them, and plain warnings."""

    figures: list[tuple[str, str]]
    warnings: list[str]


def probe_quality(quality: common_pb2.FaceQuality, probe: gateway_pb2.Photo | None) -> Quality:
    """What the search measured of the probe face (size, sharpness) and what its eyes show
    (distance between them, tilt), with a warning for each figure that is poor."""
    figures, warnings = [], []
    if quality.face_size_px:
        figures.append(("Face width", f"{quality.face_size_px} px"))
        if quality.face_size_px < SMALL_FACE_PX:
            warnings.append(f"The face is only {quality.face_size_px} px wide: fine detail is not there to compare.")
    if quality.blur:
        figures.append(("Sharpness", f"{quality.blur:.0f} (variance of the Laplacian; higher is sharper)"))
        if quality.blur < LOW_SHARPNESS:
            warnings.append("The face is blurred: features may look alike or different only because of the blur.")
    if probe is not None and len(probe.eyes) == 2:
        (x1, y1), (x2, y2) = ((p.x, p.y) for p in probe.eyes)
        apart = math.hypot(x2 - x1, y2 - y1)
        tilt = math.degrees(math.atan2(y2 - y1, x2 - x1))
        figures.append(("Between the eyes", f"{apart:.0f} px"))
        figures.append(("Head tilt", f"{tilt:+.0f}°"))
        if apart < SMALL_EYE_DISTANCE_PX:
            warnings.append(f"The eyes are {apart:.0f} px apart: too little detail for a reliable comparison.")
        if abs(tilt) > TILT_DEGREES:
            warnings.append(f"The head is tilted {abs(tilt):.0f}°: compare in the aligned view.")
        figures.append(("Head turn", f"nose {quality.turn:.0%} of the eyes' distance off their midline"))
        if quality.turn > TURNED:
            warnings.append(
                "The head is turned: the far side of the face is foreshortened, so shapes and distances "
                "differ from a frontal photo."
            )
    if not figures:
        warnings.append("No quality figures were recorded for this probe.")
    return Quality(figures, warnings)


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
