"""The NATS configurations of compose and of every Kubernetes overlay, run on a real nats-server:
each service's user may publish and subscribe to exactly what candor_kit.subjects says it needs.

Every user tries every subject of the architecture (and a few it must never touch, such as
deleting the audit stream), and the server's answers are compared with the table.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from candor_cli.deploy_secrets import nats_password
from candor_cli.processes import StackError, free_port, nats_server_binary, start_nats_server, wait_port
from candor_cli.stack_secrets import ensure_nats_passwords
from candor_kit import subjects
from candor_kit.bus import round_trip
from tests.conftest import self_signed
from tests.deploy.manifests import COMPOSE_DIR, K8S, named, render

#: Every subject the architecture uses, and some that no service may use.
PROBES = sorted(
    {
        subjects.DETECT,
        subjects.EMBED,
        subjects.EMBED_MODEL,
        subjects.MATCH_ENROLL,
        subjects.MATCH_SEARCH,
        subjects.MATCH_DELETE_SUBJECT,
        subjects.MATCH_DELETE_RECORD,
        subjects.MATCH_GALLERY,
        subjects.AUDIT_VERIFY,
        subjects.AUDIT_QUERY,
        f"{subjects.AUDIT_EVENT_PREFIX}.search.completed",
        *(subjects.audit_subject(service, "review.submitted") for service in subjects.ROLES),
        f"$JS.API.STREAM.UPDATE.{subjects.AUDIT_STREAM}",
        f"$JS.API.STREAM.MSG.DELETE.{subjects.AUDIT_STREAM}",
        f"$JS.API.CONSUMER.DELETE.{subjects.AUDIT_STREAM}.{subjects.AUDIT_CONSUMER}",
        f"$JS.API.STREAM.MSG.GET.{subjects.INGEST_DEAD_STREAM}",
        # Only the server announces a spent work item (a forged one would fail a live item), and
        # only the gateway settles the kept announcements.
        f"{subjects.MAX_DELIVERIES_ADVISORY}.{subjects.ingest_stream('match')}.ingest-match",
        f"$JS.API.CONSUMER.MSG.NEXT.{subjects.INGEST_ADVISORIES_STREAM}.{subjects.INGEST_ADVISORIES_CONSUMER}",
        f"$JS.ACK.{subjects.INGEST_ADVISORIES_STREAM}.{subjects.INGEST_ADVISORIES_CONSUMER}.1.1.1.1.0",
        subjects.AUDIT_DEAD_LETTER,
        subjects.AUDIT_CHECKPOINT,
        f"$JS.API.STREAM.CREATE.{subjects.AUDIT_STREAM}",
        f"$JS.API.STREAM.DELETE.{subjects.AUDIT_STREAM}",
        f"$JS.API.STREAM.PURGE.{subjects.AUDIT_STREAM}",
        f"$JS.API.CONSUMER.MSG.NEXT.{subjects.AUDIT_STREAM}.{subjects.AUDIT_CONSUMER}",
        f"$JS.ACK.{subjects.AUDIT_STREAM}.{subjects.AUDIT_CONSUMER}.1.1.1.1.0",
        *(f"{subjects.inbox_prefix(service)}.reply" for service in subjects.ROLES),
        "_INBOX.reply",
    }
)


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, ``>`` the rest."""
    wanted, given = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(given) > index
        if index >= len(given) or (token != "*" and token != given[index]):
            return False
    return len(wanted) == len(given)


def configurations() -> dict[str, tuple[str, str]]:
    """(nats.conf, auth.conf) of compose and of each overlay, as the deployments ship them."""
    found = {"compose": ((COMPOSE_DIR / "nats" / "nats.conf").read_text(), (K8S / "base/nats/auth.conf").read_text())}
    for overlay in ("dev", "prod"):
        data = named(render(f"overlays/{overlay}"), "ConfigMap", "candor-nats-config")["data"]
        found[f"k8s-{overlay}"] = (data["nats.conf"], data["auth.conf"])
    return found


def local_config(text: str, folder: Path, cert: Path, key: Path) -> str:
    """The same configuration with its paths, certificates and cluster port moved to this machine."""
    text = re.sub(r'store_dir: "[^"]*"', f'store_dir: "{folder / "js"}"', text)
    text = re.sub(r'pid_file: "[^"]*"', f'pid_file: "{folder / "nats.pid"}"', text)
    text = text.replace("/etc/nats-tls/tls.crt", str(cert)).replace("/etc/nats-tls/tls.key", str(key))
    text = text.replace("/etc/nats-tls/ca.crt", str(cert))
    return re.sub(r"port: 6222", f"port: {free_port()}", text)


#: How the server words a refusal (nats-py hands it over lower-cased).
REFUSAL = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"')


async def allowed_operations(url: str, user: str, password: str, **options: Any) -> dict[tuple[str, str], bool]:
    """Try to publish and to subscribe to every probe subject as ``user``; which did the server allow?

    Each refusal names its action and subject, and a round trip after the last probe proves that
    every refusal the server sent has reached the error callback.
    """
    by_name = {subject.lower(): subject for subject in PROBES}
    refused: set[tuple[str, str]] = set()
    other_errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        found = REFUSAL.search(str(exc).lower())
        if not found:
            other_errors.append(str(exc))
            return
        refused.add(("publish" if found.group(1) == "publish" else "subscribe", by_name[found.group(2)]))

    client = await nats.connect(url, user=user, password=password, error_cb=on_error, allow_reconnect=False, **options)
    try:
        for subject in PROBES:
            await client.publish(subject, b"probe")
            await client.subscribe(subject)
        await round_trip(client)
    finally:
        await client.close()
    assert not other_errors, other_errors
    return {
        (action, subject): (action, subject) not in refused for subject in PROBES for action in ("publish", "subscribe")
    }


@contextlib.contextmanager
def running(config: Path, env: dict[str, str]) -> Iterator[int]:
    """nats-server on ``config`` with ``env``, on a free loopback port; yields the port."""
    port = free_port()
    command = [nats_server_binary(), "-c", str(config), "-a", "127.0.0.1", "-p", str(port), "-m", "0"]
    with open(config.parent / "nats.log", "wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        try:
            try:
                wait_port(port, 20)
            except StackError:
                pytest.fail(f"nats-server refused {config}:\n{(config.parent / 'nats.log').read_text()[-1500:]}")
            yield port
        finally:
            server.terminate()
            server.wait(10)


async def check_every_user(url: str, passwords: dict[str, str], **options: Any) -> None:
    """Each role's user may do exactly what nats_permissions grants it; a wrong password is refused."""
    for service, password in passwords.items():
        granted = subjects.nats_permissions(service)
        expected = {
            (action, subject): any(matches(pattern, subject) for pattern in granted[action])
            and not (action == "publish" and any(matches(pattern, subject) for pattern in granted["publish_denied"]))
            for subject in PROBES
            for action in ("publish", "subscribe")
        }
        assert await allowed_operations(url, service, password, **options) == expected, service
    with pytest.raises(Exception, match=r"[Aa]uthorization"):
        await nats.connect(url, user="gateway", password="wrong", allow_reconnect=False, **options)


@pytest.mark.parametrize("name", ["compose", "k8s-dev", "k8s-prod"])
async def test_each_service_user_gets_exactly_its_permissions(name: str, tmp_path: Path) -> None:
    nats_conf, auth_conf = configurations()[name]
    (tmp_path / "auth.conf").write_text(auth_conf)
    config = tmp_path / "nats.conf"
    cert, key = self_signed(tmp_path)
    config.write_text(local_config(nats_conf, tmp_path, cert, key))
    passwords = {service: nats_password() for service in subjects.ROLES}
    env = {"POD_NAME": "candor-nats-0", **{f"NATS_PASSWORD_{s.upper()}": p for s, p in passwords.items()}}
    with running(config, env) as port:
        tls = "tls {" in nats_conf.split("cluster {")[0]
        url = f"{'tls' if tls else 'nats'}://127.0.0.1:{port}"
        options: dict[str, Any] = {"tls": ssl.create_default_context(cafile=str(cert))} if tls else {}
        await check_every_user(url, passwords, **options)


async def test_the_local_stack_nats_server_has_the_same_users(tmp_path: Path) -> None:
    passwords = ensure_nats_passwords(tmp_path)
    assert set(passwords) == set(subjects.ROLES)
    for role in subjects.ROLES:
        assert (tmp_path / "secrets" / f"nats-password-{role}").stat().st_mode & 0o077 == 0, role
    port = free_port()
    server = start_nats_server(tmp_path, port, passwords=passwords)
    try:
        assert "pw" not in (tmp_path / "nats.conf").read_text().replace("password: $NATS_PASSWORD", "")
        await check_every_user(f"nats://127.0.0.1:{port}", passwords)
        with pytest.raises(Exception, match=r"[Aa]uthorization"):
            await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False)
    finally:
        server.terminate()
        server.wait(10)


def test_each_service_may_write_audit_events_under_its_own_name_only() -> None:
    for service in subjects.ROLES:
        granted = subjects.nats_permissions(service)["publish"]
        for other in subjects.ROLES:
            allowed = any(matches(p, subjects.audit_subject(other, "review.submitted")) for p in granted)
            assert allowed == (other == service and bool(subjects.ROLES[service].audit_kinds)), (service, other)


def test_no_service_may_delete_purge_or_change_the_audit_stream() -> None:
    for service in subjects.ROLES:
        granted = subjects.nats_permissions(service)["publish"]
        for verb in ("DELETE", "PURGE", "UPDATE", "MSG.DELETE"):
            assert not any(matches(p, f"$JS.API.STREAM.{verb}.{subjects.AUDIT_STREAM}") for p in granted), service


def test_no_service_may_delete_the_chains_own_consumer() -> None:
    """The audit service deletes the consumers of its stream reads, never the one the chain is
    appended from; the server is asked in test_each_service_user_gets_exactly_its_permissions."""
    durable = f"$JS.API.CONSUMER.DELETE.{subjects.AUDIT_STREAM}.{subjects.AUDIT_CONSUMER}"
    for service in subjects.ROLES:
        granted = subjects.nats_permissions(service)
        allowed = any(matches(p, durable) for p in granted["publish"])
        assert not allowed or any(matches(p, durable) for p in granted["publish_denied"]), service
    assert any(matches(p, durable) for p in subjects.nats_permissions("audit")["publish"]), "the reads' grant"


def test_the_users_file_is_the_one_generated_from_the_subjects_table() -> None:
    import sys

    sys.path.insert(0, str(K8S.parents[1] / "scripts"))
    from nats_auth import AUTH, render

    assert AUTH.read_text() == render(), "deploy/k8s/base/nats/auth.conf is stale: run python scripts/nats_auth.py"
