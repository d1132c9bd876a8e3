"""Identifiers that cross service boundaries, checked the same way everywhere."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Mapping

from candor_kit.errors import InvalidInput

#: Subject ids are an agency's own ids (a booking number, say): printable, no control characters.
SUBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
#: A new subject id, held to the shape of a case number: segments that each start with a letter or
#: digit, joined by single slashes (no "..", no empty or leading or trailing segment).
NEW_SUBJECT_ID = re.compile(r"^(?=.{1,128}$)[A-Za-z0-9][A-Za-z0-9._:-]*(?:/[A-Za-z0-9][A-Za-z0-9._:-]*)*$")
#: A metadata key: a short name.
METADATA_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
MAX_METADATA_KEYS = 32
MAX_METADATA_VALUE = 512
#: The namespace of record ids: a record's id is derived from its subject and its photo.
RECORD_NAMESPACE = uuid.UUID("6f1c3d52-8a61-4c0e-9b7e-2a4d5e6f7a80")


def check_subject_id(subject_id: str) -> str:
    """Return the subject id if well formed, else raise InvalidInput."""
    if not subject_id:
        raise InvalidInput("subject_id is required")
    if not SUBJECT_ID.match(subject_id):
        raise InvalidInput("subject_id must be 1-128 letters, digits or ._:/- and start with a letter or digit")
    return subject_id


def check_new_subject_id(subject_id: str) -> str:
    """A subject id for a new record: well formed (``check_subject_id``) and shaped as case numbers
    are. Ids already in a gallery are looked up and deleted under the looser rule."""
    check_subject_id(subject_id)
    if not NEW_SUBJECT_ID.match(subject_id) or ".." in subject_id:
        raise InvalidInput(
            "subject_id must be segments of letters, digits and ._:- joined by single slashes, each "
            "starting with a letter or digit, with no '..'"
        )
    return subject_id


def check_metadata(metadata: Mapping[str, str]) -> Mapping[str, str]:
    """A record's metadata if it is bounded and harmless to show; InvalidInput otherwise: at most
    32 keys of up to 64 letters, digits and ._-, values of up to 512 printable characters without
    control or formatting characters (no terminal escapes) and without < or > (no markup)."""
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidInput(f"metadata takes at most {MAX_METADATA_KEYS} keys; this has {len(metadata)}")
    for key, value in metadata.items():
        if not METADATA_KEY.match(key):
            raise InvalidInput(f"metadata key {key[:40]!r} must be 1-64 letters, digits or ._- starting with a letter")
        if len(value) > MAX_METADATA_VALUE:
            raise InvalidInput(f"metadata {key} is {len(value)} characters; values take at most {MAX_METADATA_VALUE}")
        if not all(ch == " " or unicodedata.category(ch)[0] not in "CZ" for ch in value) or set(value) & {"<", ">"}:
            raise InvalidInput(f"metadata {key} holds control characters or < >; send plain text")
    return metadata


def record_id_for(subject_id: str, image_sha256: str) -> str:
    """The stable record id of one subject's photo (the same in every model's gallery)."""
    return str(uuid.uuid5(RECORD_NAMESPACE, f"{subject_id}\x00{image_sha256}"))
