"""Identifiers that cross service boundaries, checked the same way everywhere."""

from __future__ import annotations

import re
import uuid

from candor_kit.errors import InvalidInput

#: Subject ids are an agency's own ids (a booking number, say): printable, no control characters.
SUBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
#: The namespace of record ids: a record's id is derived from its subject and its photo.
RECORD_NAMESPACE = uuid.UUID("6f1c3d52-8a61-4c0e-9b7e-2a4d5e6f7a80")


def check_subject_id(subject_id: str) -> str:
    """Return the subject id if well formed, else raise InvalidInput."""
    if not subject_id:
        raise InvalidInput("subject_id is required")
    if not SUBJECT_ID.match(subject_id):
        raise InvalidInput("subject_id must be 1-128 letters, digits or ._:/- and start with a letter or digit")
    return subject_id


def record_id_for(subject_id: str, image_sha256: str) -> str:
    """The stable record id of one subject's photo (the same in every model's gallery)."""
    return str(uuid.uuid5(RECORD_NAMESPACE, f"{subject_id}\x00{image_sha256}"))
