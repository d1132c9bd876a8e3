"""A case's discovery export: checking it without the database, and writing it for people.

Each exported record carries its previous hash, its own hash and its signature, so the defence can
check every record offline against the audit key (``check_records``) without the rest of the chain.
``render_html`` writes the readable copy: what was searched, by whom, why, which candidates were
shown, and what was refused.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import unicodedata
from collections import Counter
from typing import Any

from candor.audit.v1 import audit_pb2
from candor.gateway.v1 import gateway_pb2
from candor_kit.audit_events import record_details
from candor_kit.audit_records import StoredRecord, entry_from_event, record_hash, rfc3339
from candor_kit.audit_signing import (
    case_manifest_message,
    case_records_sha256,
    key_id,
    load_public_key,
    record_message,
    verify_signature,
)

LEAD_NOTICE = "Investigative lead only: not a basis for arrest."


def stored_record(record: audit_pb2.AuditRecord) -> StoredRecord:
    """The chain's form of an exported record, with times in the exact form that was hashed."""
    return StoredRecord(
        record.sequence,
        entry_from_event(record.event),
        rfc3339(record.recorded_at),
        record.previous_hash,
        record.record_hash,
        record.key_id,
        record.signature,
    )


def check_records(records: list[audit_pb2.AuditRecord], public_key_pem: str) -> list[str]:
    """Problems with exported records: a hash that does not match its content, or a signature that
    is not the audit key's. Empty when every record is authentic."""
    public_key = load_public_key(public_key_pem)
    keys = {key_id(public_key): public_key}
    problems = []
    for record in map(stored_record, records):
        if record_hash(record.previous_hash, record.sequence, record.entry, record.recorded_at) != record.record_hash:
            problems.append(f"record {record.sequence}: content does not match its hash")
        elif not verify_signature(
            keys, record.key_id, record.signature, record_message(record.sequence, record.record_hash)
        ):
            problems.append(f"record {record.sequence}: signature is not the audit key's")
    return problems


def check_complete(export: gateway_pb2.ExportCaseResponse, public_key_pem: str) -> tuple[list[str], str]:
    """Problems with an export's completeness against the audit service's signed manifest of the
    case (a record left out, or one that is not the case's), and a line saying what it covers; an
    export that says it holds part of the case (``scope``) is shown as that part."""
    manifest = export.verification.case_manifest
    if export.scope:
        # A part of a case (a case system's own searches): each record is still checked on its own.
        return [], f"partial: {export.scope}; {len(export.records)} records, each signed by the audit key"
    if not export.verification.HasField("case_manifest"):
        return ["the export carries no signed manifest of the case: its completeness cannot be shown"], ""
    public_key = load_public_key(public_key_pem)
    message = case_manifest_message(
        manifest.case_number, manifest.through_sequence, list(manifest.sequences), manifest.records_sha256,
        manifest.made_at,
    )  # fmt: skip
    if not verify_signature({key_id(public_key): public_key}, manifest.key_id, manifest.signature, message):
        return ["the case manifest's signature is not the audit key's"], ""
    problems = []
    if manifest.case_number != export.case_number:
        problems.append(f"the manifest is of case {manifest.case_number!r}, not {export.case_number!r}")
    covered = [r for r in export.records if r.sequence <= manifest.through_sequence]
    held = {record.sequence for record in covered}
    lacking = [sequence for sequence in manifest.sequences if sequence not in held]
    extra = sorted(held - set(manifest.sequences))
    if lacking:
        named = ", ".join(map(str, lacking[:20])) + (" ..." if len(lacking) > 20 else "")
        problems.append(f"the export lacks {len(lacking)} record(s) of the case: {named}")
    if extra:
        problems.append(f"the export holds {len(extra)} record(s) not of the case: {', '.join(map(str, extra[:20]))}")
    ordered = sorted(covered, key=lambda record: record.sequence)
    if not problems and case_records_sha256((r.sequence, r.record_hash) for r in ordered) != manifest.records_sha256:
        problems.append("the export's records differ from those the manifest vouches for")
    covers = (
        f"complete: all {len(manifest.sequences)} records of case {manifest.case_number} through chain record "
        f"{manifest.through_sequence}, as signed by the audit service at {manifest.made_at}"
    )
    return problems, covers


def export_file_stem(case_number: str) -> str:
    """The file name, without suffix, of a case's export: ``case-<CASE>``.

    Characters a file name cannot safely hold become "_", and then a short hash of the case number
    is added, so two case numbers never share a file (``A/1`` and ``A_1``) and none can leave the
    folder. The name keeps every dot: case ``2026.000123`` is ``case-2026.000123``.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", case_number).lstrip(".")
    if safe != case_number:
        safe += "-" + hashlib.sha256(case_number.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"case-{safe}"


def _text(value: object) -> str:
    """``value`` as HTML text: markup escaped, and control or formatting characters (an ANSI
    escape, a bidi override) shown as their escape code instead of acting on the page."""
    shown = "".join(
        ascii(ch)[1:-1] if unicodedata.category(ch)[0] == "C" and ch not in "\n\t" else ch for ch in str(value)
    )
    return html.escape(shown)


def shown_candidates(details: dict[str, Any]) -> list[dict[str, Any]]:
    """The candidates a search.completed record lists; whatever else its details hold there
    (a record written by an older or faulty publisher) shows as none rather than breaking the page."""
    candidates = details.get("candidates")
    return [c for c in candidates if isinstance(c, dict)] if isinstance(candidates, list) else []


def _candidates_table(candidates: list[dict[str, Any]]) -> str:
    if not candidates:
        return "<p>No candidate was shown.</p>"
    rows = "".join(
        f"<tr><td>{_text(str(c.get('rank', '')))}</td><td>{_text(str(c.get('subject_id', '')))}</td>"
        f"<td>{_text(str(c.get('distance', '')))}</td></tr>"
        for c in candidates
    )
    return f"<table><tr><th>rank</th><th>subject</th><th>distance</th></tr>{rows}</table>"


def _record_html(record: audit_pb2.AuditRecord) -> str:
    event = record.event
    details = record_details(record)
    body = ""
    if event.kind == "search.completed":
        model = details.get("model") if isinstance(details.get("model"), dict) else {}
        body = (
            f"<p>Model {_text(str(model.get('id', '')))} {_text(str(model.get('version', '')))}, "
            f"threshold {_text(str(details.get('threshold', '')))}, calibration "
            f"{_text(str(details.get('calibration_id') or 'none'))}; probe SHA-256 "
            f"<code>{_text(str(details.get('probe_sha256', '')))}</code>.</p>"
            + _candidates_table(shown_candidates(details))
        )
    elif event.kind.endswith(".refused"):
        body = (
            f"<p class='refused'>Refused ({_text(str(details.get('code', '')))}): "
            f"{_text(str(details.get('reason', '')))}</p>"
        )
    else:
        body = f"<pre>{_text(json.dumps(details, indent=2, sort_keys=True))}</pre>"
    return (
        f"<section><h3>#{record.sequence} {_text(event.kind)}</h3>"
        f"<p>{_text(rfc3339(event.occurred_at))} by <b>{_text(event.actor)}</b>, "
        f"purpose {_text(event.purpose or '-')}, trace {_text(event.trace_id or '-')}</p>"
        f"{body}<p class='hash'>hash {_text(record.record_hash)} &middot; previous "
        f"{_text(record.previous_hash)} &middot; key {_text(record.key_id)} &middot; signature "
        f"{_text(record.signature)}</p></section>"
    )


def render_html(export: gateway_pb2.ExportCaseResponse, problems: list[str]) -> str:
    """The export as a self-contained HTML page."""
    kinds = Counter(record.event.kind for record in export.records)
    shown = sum(len(shown_candidates(record_details(r))) for r in export.records if r.event.kind == "search.completed")
    verification = export.verification
    chain = (
        f"the whole chain verified: {verification.records_checked} records, {verification.signatures_checked} "
        f"signatures, {verification.checkpoints_checked} checkpoints, head {verification.head_hash}"
        if verification.ok
        else f"the chain FAILED verification at record {verification.first_bad_sequence}: {verification.problem}"
    )
    authenticity = (
        "every record below matches its hash and carries the audit key's signature"
        if not problems
        else "PROBLEMS: " + "; ".join(problems)
    )
    summary = "".join(f"<li>{_text(kind)}: {count}</li>" for kind, count in sorted(kinds.items()))
    case = _text(export.case_number)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Candor audit export: case {case}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #999; padding: 0.2em 0.6em; }}
.hash {{ font-size: 0.75em; color: #555; word-break: break-all; }} .refused {{ color: #a00; }}
</style></head><body>
<h1>Audit export for case {case}</h1>
<p>Exported {_text(rfc3339(export.exported_at))} by {_text(export.exported_by)}.
{_text(LEAD_NOTICE)}</p>
<h2>Integrity</h2><ul><li>{_text(chain)}</li><li>{_text(authenticity)}</li></ul>
<h2>Summary</h2><ul>{summary}<li>candidates shown in all: {shown}</li></ul>
<h2>Records ({len(export.records)})</h2>
{"".join(_record_html(record) for record in export.records)}
<h2>Audit public key</h2><pre>{_text(verification.public_key_pem)}</pre>
</body></html>
"""
