"""Retained probes: encrypted at rest, tamper-evident, and found for deletion when retention ends."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from candor_gateway.retention import ProbeStore, generate_probe_key, read_probe_key
from candor_kit import ConfigError, PreconditionFailed


@pytest.fixture
def store(tmp_path: Path) -> ProbeStore:
    key = tmp_path / "probe-key"
    key.write_bytes(generate_probe_key())
    return ProbeStore(tmp_path / "probes", read_probe_key(key))


def test_a_probe_is_stored_encrypted_and_read_back(store: ProbeStore, tmp_path: Path) -> None:
    search_id, photo = str(uuid.uuid4()), b"\xff\xd8 a photo's bytes " * 100
    store.save(search_id, photo, "ab" * 32)
    on_disk = (tmp_path / "probes" / f"{search_id}.probe").read_bytes()
    assert photo not in on_disk and b"a photo's bytes" not in on_disk
    assert (tmp_path / "probes" / f"{search_id}.probe").stat().st_mode & 0o077 == 0
    assert store.load(search_id) == photo
    assert store.load(str(uuid.uuid4())) is None


def test_an_altered_probe_or_header_fails_its_integrity_check(store: ProbeStore, tmp_path: Path) -> None:
    search_id = str(uuid.uuid4())
    store.save(search_id, b"photo" * 50, "cd" * 32)
    path = tmp_path / "probes" / f"{search_id}.probe"
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(PreconditionFailed, match="integrity"):
        store.load(search_id)
    path.write_bytes(original.replace(b"cdcd", b"eeee", 1))
    with pytest.raises(PreconditionFailed, match="integrity"):
        store.load(search_id)


def test_probes_expire_after_the_retention_days(store: ProbeStore) -> None:
    kept = str(uuid.uuid4())
    store.save(kept, b"photo", "00" * 32)
    assert store.expired(keep_days=7) == []
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=7, seconds=1)
    [expired] = store.expired(keep_days=7, now=later)
    assert expired.search_id == kept
    assert [p.search_id for p in store.expired(keep_days=0)] == [kept]
    assert store.delete(expired) and not store.delete(expired)
    assert store.load(kept) is None
    unrecorded = str(uuid.uuid4())
    store.save(unrecorded, b"photo", "11" * 32)
    store.discard(unrecorded)
    assert store.load(unrecorded) is None


def test_a_malformed_key_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "probe-key"
    key.write_text("not base64!")
    with pytest.raises(ConfigError, match="probe key"):
        read_probe_key(key)


def test_an_unreadable_probe_file_does_not_stop_the_sweep_of_the_others(store: ProbeStore, tmp_path: Path) -> None:
    (tmp_path / "probes" / "garbage.probe").write_bytes(b"\xff not a header\n")
    kept = str(uuid.uuid4())
    store.save(kept, b"photo", "00" * 32)
    assert [probe.search_id for probe in store.expired(keep_days=0)] == [kept]
