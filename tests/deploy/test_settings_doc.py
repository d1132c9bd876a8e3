"""deploy/SETTINGS.md is the catalogue, written out: it may not drift from the code."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from settings_doc import DOC, render  # noqa: E402


def test_the_settings_document_matches_the_catalogue() -> None:
    assert DOC.read_text() == render(), "deploy/SETTINGS.md is out of date: run python scripts/settings_doc.py"


def test_every_declared_setting_is_in_the_document() -> None:
    from candor_kit import catalogue

    text = DOC.read_text()
    services = [*catalogue.SERVICES, *catalogue.WEB_SERVICES]
    missing = [s.name for name in services for s in catalogue.settings_for(name) if f"`{s.name}`" not in text]
    assert missing == []
