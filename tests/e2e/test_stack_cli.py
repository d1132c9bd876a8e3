"""The local process stack driven through the ``candor`` command, as a user would."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from candor_cli import LocalStack
from candor_cli.case_export import export_file_stem
from candor_gateway import quota
from candor_kit.model_registry import ModelRegistry

CANDOR = str(Path(sys.executable).parent / "candor")
pytestmark = pytest.mark.e2e


def candor(stack: LocalStack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([CANDOR, "--data", str(stack.data), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def searching(probe: Path | str, case: str) -> tuple[str, ...]:
    """The arguments of ``candor search`` for a case, with the purpose "investigation" and a warrant."""
    return ("search", str(probe), "--case", case, "--purpose", "investigation", "--authorisation", "W-E2E")


def search_json(stack: LocalStack, probe: Path, case: str) -> dict:  # type: ignore[type-arg]
    """Run ``candor search --json`` for a case with the purpose "investigation"."""
    result = candor(stack, *searching(probe, case), "--json")
    return json.loads(result.stdout)


def wait_for_audit(stack: LocalStack, sql: str, params: tuple[str, ...] = ()) -> list[tuple]:  # type: ignore[type-arg]
    """Poll the stack's audit database until ``sql`` returns rows (or fail after 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with sqlite3.connect(stack.data / "audit" / "audit.db") as db:
            rows = db.execute(sql, params).fetchall()
        if rows:
            return rows
        time.sleep(0.2)
    pytest.fail(f"no audit rows for {sql} {params}")


@pytest.fixture(scope="module")
def gallery(local_stack: LocalStack, samples: Path) -> LocalStack:
    candor(local_stack, "enroll", str(samples / "obama.jpg"), "--subject", "obama")
    for index in range(6):
        candor(local_stack, "enroll", str(samples / "t1.jpg"), "--subject", f"t1-{index}", "--face", str(index))
    return local_stack


def test_every_service_reports_serving_and_the_signing_keys_are_private(local_stack: LocalStack) -> None:
    status = json.loads(candor(local_stack, "stack", "status").stdout)
    assert status["running"]
    assert set(status["pids"]) == {"nats", "gateway", "detector", "embedder", "matcher", "audit", "review"}
    for key in ("token-signing.pem", "audit-signing-key.pem"):
        assert (local_stack.data / "secrets" / key).stat().st_mode & 0o077 == 0, key


def test_a_token_issued_by_the_cli_carries_only_its_roles(local_stack: LocalStack, samples: Path) -> None:
    token = candor(local_stack, "token", "issue", "--user", "zoe", "--roles", "auditor", "--ttl", "10m").stdout.strip()
    assert candor(local_stack, "--token", token, "audit", "verify").returncode == 0
    refused = candor(
        local_stack, "--token", token, *searching(samples / "obama2.jpg", "C-Z"), check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "PERMISSION_DENIED" in refused.stderr and "may not call Search" in refused.stderr


def test_search_prints_ranked_candidates_and_the_notice(gallery: LocalStack, samples: Path) -> None:
    out = candor(gallery, *searching(samples / "obama2.jpg", "CASE-E2E-1")).stdout
    assert " 1. obama" in out
    assert "investigative lead only: not a basis for arrest" in out
    found = search_json(gallery, samples / "obama3.jpg", "CASE-E2E-1")
    assert found["candidates"][0]["subject_id"] == "obama"
    assert found["candidates"][0]["distance"] < found["model"]["threshold"]


def test_unknown_person_gets_no_candidate(gallery: LocalStack, samples: Path) -> None:
    out = candor(gallery, *searching(samples / "biden.jpg", "CASE-E2E-2")).stdout
    assert "no candidate within the threshold (cosine distance 0.642 or less)" in out


def test_group_photo_lists_six_faces(local_stack: LocalStack, samples: Path) -> None:
    assert "6 face(s)" in candor(local_stack, "faces", str(samples / "t1.jpg")).stdout


def test_bad_input_gets_a_status_code_and_the_stack_keeps_serving(
    gallery: LocalStack, samples: Path, tmp_path: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    refused = candor(gallery, *searching(text, "CASE-E2E-3"), check=False)
    assert refused.returncode == 2 and "INVALID_ARGUMENT" in refused.stderr
    denied = candor(
        gallery, "search", str(samples / "obama2.jpg"), "--case", "CASE-E2E-3", "--purpose", "fishing", check=False
    )
    assert denied.returncode == 2 and "PERMISSION_DENIED" in denied.stderr
    stranger = candor(
        gallery,
        *searching(samples / "obama2.jpg", "CASE-E2E-3"),
        "--token",
        "not-the-token",
        check=False,
    )
    assert stranger.returncode == 2 and "UNAUTHENTICATED" in stranger.stderr
    assert gallery.running()
    candor(gallery, *searching(samples / "obama2.jpg", "CASE-E2E-3"))


def test_search_while_audit_is_stopped_lands_after_restart(gallery: LocalStack, samples: Path) -> None:
    gallery.stop_service("audit")
    found = search_json(gallery, samples / "obama2.jpg", "CASE-E2E-4")
    gallery.start_service("audit")
    [(details,)] = wait_for_audit(
        gallery, "SELECT details_json FROM audit_record WHERE event_id = ?", (found["search_id"],)
    )
    # The default policy has a daily quota; with the chain unreadable it was counted without it: by
    # the gateways' shared count, whose floor was the gateway's tally, or a read of the chain a
    # moment before plus that tally.
    counted, floor = json.loads(details)["quota_counted_from"].split("; floor: ")
    assert counted == quota.FROM_SHARED and floor in (quota.FROM_GATEWAY, quota.FROM_RECENT_READ)
    assert "audit chain OK" in candor(gallery, "audit", "verify").stdout


def test_eval_through_the_running_services_matches_the_in_process_run(
    local_stack: LocalStack, sample_dataset: Path, tmp_path: Path
) -> None:
    candor(local_stack, "eval", str(sample_dataset), "--via-stack", "--out", str(tmp_path / "stack"))
    candor(local_stack, "eval", str(sample_dataset), "--out", str(tmp_path / "local"))
    via_stack = json.loads((tmp_path / "stack" / "metrics.json").read_text())["candor-stack"]
    local = json.loads((tmp_path / "local" / "metrics.json").read_text())["candor"]
    assert via_stack["verification"]["mated_pairs"] == local["verification"]["mated_pairs"] == 3
    assert via_stack["verification"]["eer"] == pytest.approx(local["verification"]["eer"], abs=1e-6)
    assert via_stack["verification"]["eer_threshold"] == pytest.approx(local["verification"]["eer_threshold"], abs=1e-4)


def test_logs_are_json_with_the_trace_id_and_never_hold_the_token(gallery: LocalStack, samples: Path) -> None:
    found = search_json(gallery, samples / "obama2.jpg", "CASE-E2E-5")
    token = gallery.token()
    for name in ("gateway", "detector", "embedder", "matcher", "audit"):
        text = (gallery.logs / f"{name}.log").read_text()
        assert token not in text
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert lines and all("trace_id" in line for line in lines)
        if name != "audit":  # the audit service appends later, from the stream, in its own trace
            assert any(line["trace_id"] == found["trace_id"] for line in lines), name


def test_a_case_export_is_written_and_checks_out_offline(gallery: LocalStack, samples: Path, tmp_path: Path) -> None:
    found = search_json(gallery, samples / "obama2.jpg", "CASE-E2E-6/2026")
    stem = export_file_stem("CASE-E2E-6/2026")
    assert stem.startswith("case-CASE-E2E-6_2026-")
    deadline = time.monotonic() + 20
    while True:  # the audit service appends from the stream, a moment after the search
        result = candor(gallery, "audit", "export", "--case", "CASE-E2E-6/2026", "--out", str(tmp_path))
        exported = json.loads((tmp_path / f"{stem}.json").read_text())
        kinds = {r["event"]["kind"] for r in exported.get("records", [])}
        if {"matcher.searched", "search.completed"} <= kinds or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "chain OK" in result.stdout
    # Both ends recorded the search: the gateway under its search id, the matcher where it ran.
    by_kind = {r["event"]["kind"]: r["event"] for r in exported["records"]}
    assert by_kind["search.completed"]["event_id"] == found["search_id"]
    assert by_kind["matcher.searched"]["case_number"] == "CASE-E2E-6/2026"
    page = (tmp_path / f"{stem}.html").read_text()
    assert found["candidates"][0]["subject_id"] in page
    checked = candor(gallery, "audit", "check-export", str(tmp_path / f"{stem}.json"))
    assert "hashes and signatures OK" in checked.stdout

    exported["records"][0]["event"]["actor"] = "someone-else"
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(exported))
    refused = candor(gallery, "audit", "check-export", str(forged), check=False)
    assert refused.returncode == 1 and "content does not match its hash" in refused.stdout


def test_an_outside_party_keeps_checkpoints_and_verifies_against_them(gallery: LocalStack, tmp_path: Path) -> None:
    kept = tmp_path / "kept.jsonl"
    candor(gallery, "audit", "verify", "--keep", str(kept))
    time.sleep(1.5)  # each verification is itself audited, so the head moves on
    candor(gallery, "audit", "verify", "--keep", str(kept))
    sequences = [int(json.loads(line)["sequence"]) for line in kept.read_text().splitlines()]
    assert len(sequences) == 2 and sequences[0] < sequences[1]
    result = candor(gallery, "audit", "verify", "--checkpoints", str(kept))
    checked = re.search(r"(\d+) checkpoints", result.stdout)
    assert "audit chain OK" in result.stdout and checked and int(checked.group(1)) >= 2


def test_the_oversight_report_counts_the_day_from_the_audit_log(gallery: LocalStack, tmp_path: Path) -> None:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    result = candor(gallery, "report", "--from", today, "--to", today, "--out", str(tmp_path), "--format", "html")
    assert "audit records ->" in result.stdout
    page = (tmp_path / "report.html").read_text()
    assert "<td>investigation</td>" in page and "data:image/png;base64," in page
    assert (tmp_path / "searches-by-purpose.png").read_bytes()[:4] == b"\x89PNG"
    candor(gallery, "report", "--from", today, "--to", today, "--out", str(tmp_path), "--format", "csv")
    assert "searches by purpose,investigation," in (tmp_path / "report.csv").read_text()
    candor(gallery, "report", "--from", today, "--to", today, "--out", str(tmp_path), "--format", "pdf")
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF-")
    refused = candor(gallery, "report", "--from", today, "--to", "2000-01-01", check=False)
    assert refused.returncode == 2 and "--to is before --from" in refused.stderr


def test_stack_down_stops_every_process_gracefully(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "data")
    state = stack.up()
    pids = dict(state.pids)
    stack.down()
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", name
    for name in ("gateway", "detector", "embedder", "matcher", "audit"):
        log = (stack.logs / f"{name}.log").read_text()
        last = [json.loads(line) for line in log.splitlines() if line.startswith("{")][-1]
        assert last["event"] == "stopped", name
        # A drain cut short by its timeout (pull subscriptions left subscribed) leaves a traceback.
        assert "Traceback" not in log and "never retrieved" not in log, name


def test_uncalibrated_model_is_refused_until_calibrated_and_the_calibration_is_audited(
    tmp_path: Path, samples: Path, sample_dataset: Path
) -> None:
    stack = LocalStack(tmp_path / "data", require_calibration=True)
    stack.up()
    try:
        candor(stack, "enroll", str(samples / "obama.jpg"), "--subject", "obama")
        probe = searching(samples / "obama2.jpg", "CASE-CAL-1")
        refused = candor(stack, *probe, check=False)
        assert refused.returncode == 2 and "FAILED_PRECONDITION" in refused.stderr
        assert "no calibration record" in refused.stderr

        calibrated = candor(
            stack, "model", "calibrate", "sface", "--dataset", str(sample_dataset), "--target-fmr", "0.05"
        )
        assert "calibration audited" in calibrated.stdout
        stack.stop_service("gateway")
        stack.start_service("gateway")

        found = json.loads(candor(stack, *probe, "--json").stdout)
        assert found["candidates"][0]["subject_id"] == "obama"
        record = ModelRegistry(stack.registry).get("sface", "1")
        assert record is not None and found["model"]["calibration_id"] == record.calibration_id
        assert found["model"]["threshold"] == pytest.approx(record.threshold, abs=1e-6)

        # One row once all three kinds are in the chain.
        wait_for_audit(
            stack,
            "SELECT COUNT(DISTINCT kind) FROM audit_record WHERE kind IN (?, ?, ?) HAVING COUNT(DISTINCT kind) = 3",
            ("model.calibrated", "search.refused", "search.completed"),
        )
    finally:
        stack.down()


def test_two_reviewers_confirm_a_candidate_from_the_command_line(
    gallery: LocalStack, samples: Path, tmp_path: Path
) -> None:
    found = search_json(gallery, samples / "obama2.jpg", "CASE-E2E-7")
    reviewers = {
        user: candor(gallery, "token", "issue", "--user", user, "--roles", "reviewer", "--ttl", "10m").stdout.strip()
        for user in ("rita", "rob")
    }
    listed = candor(gallery, "--token", reviewers["rita"], "review", "list").stdout
    assert found["search_id"] in listed and f"candor review analyse {found['search_id']}" in listed
    own = candor(gallery, "review", "submit", found["search_id"], "--rank", "1", "--decision", "confirm", check=False)
    assert own.returncode == 2 and "may not call SubmitReview" in own.stderr
    for user, token in reviewers.items():
        unseen = candor(
            gallery, "--token", token, "review", "submit", found["search_id"], "--rank", "1", "--decision", "confirm",
            "--features", "ears", check=False,
        )  # fmt: skip
        assert unseen.returncode == 2 and "record your analysis of the probe first" in unseen.stderr
        waiting = candor(gallery, "--token", token, "review", "show", found["search_id"]).stdout
        assert "1 candidate(s) wait for your analysis of the probe" in waiting
        candor(gallery, "--token", token, "review", "analyse", found["search_id"], "--sufficient")
        unseen = candor(
            gallery, "--token", token, "review", "submit", found["search_id"], "--rank", "1", "--decision", "confirm",
            "--features", "ears,eyebrows", check=False,
        )  # fmt: skip
        assert unseen.returncode == 2 and "look at the probe and candidate 1 first" in unseen.stderr
        saved = candor(
            gallery, "--token", token, "review", "show", found["search_id"], "--photos", str(tmp_path / user)
        )
        assert f"probe: {tmp_path / user / (found['search_id'] + '-probe.jpeg')}" in saved.stdout, saved.stdout
        assert (tmp_path / user / f"{found['search_id']}-candidate-1.jpeg").exists()
        done = candor(
            gallery, "--token", token, "review", "submit", found["search_id"], "--rank", "1", "--decision", "same",
            "--features", "ears,eyebrows",
        )  # fmt: skip
        assert "candidate 1, same person; status (blind)" in done.stdout, user
    shown = candor(gallery, "review", "show", found["search_id"]).stdout
    assert re.search(r" 1\. obama +distance [0-9.]+  LEAD", shown)
    assert "reviewer rita: same person [ears, eyebrows]" in shown and "reviewer rob: same person" in shown
    blind = candor(gallery, "--token", reviewers["rita"], "review", "show", found["search_id"]).stdout
    assert "(blind)" in blind  # after her analysis she sees the candidate, never its status


def test_editing_one_audit_record_makes_verify_fail_and_name_it(gallery: LocalStack, samples: Path) -> None:
    # Runs last in this module (it is the last test of the file): it breaks the chain on purpose,
    # and the audit service appends nothing more to a broken chain.
    assert candor(gallery, "audit", "verify").returncode == 0
    database = gallery.data / "audit" / "audit.db"
    with sqlite3.connect(database) as db:
        target = db.execute("SELECT sequence FROM audit_record WHERE kind = 'search.completed' LIMIT 1").fetchone()[0]
        db.execute("UPDATE audit_record SET details_json = '{\"candidates\":[]}' WHERE sequence = ?", (target,))
    result = candor(gallery, "audit", "verify", check=False)
    assert result.returncode == 1
    assert f"BROKEN at record {target}:" in result.stdout
    assert "altered" in result.stdout
    # The break stops the chain: a search still succeeds (its event waits on the stream), but
    # nothing more is appended.
    count = "SELECT COUNT(*) FROM audit_record"
    with sqlite3.connect(database) as db:
        before = db.execute(count).fetchone()[0]
    assert search_json(gallery, samples / "obama2.jpg", "CASE-E2E-BROKEN")["candidates"]
    time.sleep(2)
    with sqlite3.connect(database) as db:
        assert db.execute(count).fetchone()[0] == before
    assert "audit_chain_broken" in (gallery.logs / "audit.log").read_text()
