"""Identifiers that cross service boundaries, checked the same way everywhere."""

from __future__ import annotations

import re

from candor_kit.errors import InvalidInput

#: Subject ids are an agency's own ids (a booking number, say): printable, no control characters.
SUBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


def check_subject_id(subject_id: str) -> str:
    """Return the subject id if well formed, else raise InvalidInput."""
    if not subject_id:
        raise InvalidInput("subject_id is required")
    if not SUBJECT_ID.match(subject_id):
        raise InvalidInput("subject_id must be 1-128 letters, digits or ._:/- and start with a letter or digit")
    return subject_id
