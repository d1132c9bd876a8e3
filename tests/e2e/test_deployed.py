"""The end-to-end suite against the compose topology.

Inside ``docker compose -f compose.yaml -f compose.e2e.yaml`` (``make test-containers``) the runner
sets CANDOR_E2E_GATEWAY and CANDOR_E2E_TOKEN_KEY_FILE and these tests call the containers. In
``make test`` they run the local process stack in compose mode: the services get exactly the environment the
compose files give them, nats-server runs the compose nats.conf with its per-service users and
permissions, and only addresses, paths and the Qdrant server (the embedded backend stands in) are
replaced. The audit chain goes to a real PostgreSQL server, as compose's does.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest

from candor_cli import LocalStack
from candor_cli.stack import AUDIENCE, OPERATOR_ROLES
from candor_client import GatewayClient
from candor_kit.tokens import issue_token, load_private_key

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = [ROOT / "deploy" / "compose" / "compose.yaml", ROOT / "deploy" / "compose" / "compose.e2e.yaml"]
pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Deployment:
    """What the tests reach of the deployment under test."""

    gateway: str
    token: str
    #: The audit database's connection string, to see the chain where the deployment keeps it.
    audit_dsn: str
    #: host:port of the review desk (plain HTTP: compose publishes it on loopback only).
    review: str
    #: Signs tokens the deployment trusts (as its identity provider would).
    reviewer_token: str


@pytest.fixture(scope="module")
def deployed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The deployment under test: the compose containers, or the compose topology as processes."""
    address = os.environ.get("CANDOR_E2E_GATEWAY")
    if address:
        key = load_private_key(Path(os.environ["CANDOR_E2E_TOKEN_KEY_FILE"]).read_bytes())
        issuer = os.environ["CANDOR_E2E_TOKEN_ISSUER"]
        token = issue_token(key, "e2e-runner", OPERATOR_ROLES, 3600, issuer, AUDIENCE)
        reviewer = issue_token(key, "e2e-reviewer", ["reviewer"], 3600, issuer, AUDIENCE)
        dsn = Path(os.environ["CANDOR_E2E_AUDIT_DSN_FILE"]).read_text().strip()
        yield Deployment(address, token, dsn, os.environ["CANDOR_E2E_REVIEW"], reviewer)
        return
    # The compose stack keeps the audit chain in PostgreSQL: a real server stands in for the container.
    dsn = request.getfixturevalue("postgres_server").new_database()
    stack = LocalStack(tmp_path_factory.mktemp("compose-topology"), compose=COMPOSE, postgres_dsn=dsn)
    try:
        state = stack.up()
        reviewer = stack.token("e2e-reviewer", ("reviewer",))
        yield Deployment(state.gateway, stack.token(), dsn, state.addresses["review"], reviewer)
    finally:
        stack.down()


@pytest.fixture(scope="module")
def client(deployed: Deployment) -> Iterator[GatewayClient]:
    with GatewayClient(deployed.gateway, deployed.token) as gateway:
        yield gateway


def test_enrol_search_and_verify_through_the_deployed_topology(
    client: GatewayClient, deployed: Deployment, samples: Path
) -> None:
    # Fresh ids per run: a compose stack keeps its gallery in volumes between runs.
    run = uuid.uuid4().hex[:8]
    obama, biden = f"E2E-{run}-obama", f"E2E-{run}-biden"
    client.enroll(samples / "obama.jpg", obama)
    client.enroll(samples / "biden.jpg", biden)

    found = client.search(
        samples / "obama2.jpg",
        case_number=f"E2E-{run}",
        purpose="investigation",
        max_candidates=20,
        authorisation="W-E2E",
    )

    ranked = [candidate.subject_id for candidate in found.candidates]
    assert obama in ranked
    assert biden not in ranked[: ranked.index(obama) + 1]
    verdict = client.verify_audit()
    assert verdict.ok and verdict.records_checked >= 3
    with psycopg.connect(deployed.audit_dsn) as db:
        cases = {row[0] for row in db.execute("SELECT case_number FROM audit_record")}
    assert f"E2E-{run}" in cases, "the search's audit record is in the deployment's PostgreSQL"


def test_a_wrong_token_is_refused_by_the_deployed_gateway(deployed: Deployment, samples: Path) -> None:
    with GatewayClient(deployed.gateway, "not-a-token") as stranger, pytest.raises(grpc.RpcError) as refused:
        stranger.search(samples / "obama2.jpg", case_number="E2E-X", purpose="investigation")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Lets a test see the desk's redirects instead of following them."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def fetch(url: str, form: dict[str, str] | None = None, cookies: str = "") -> tuple[int, dict[str, str], str]:
    """One request to the desk, by hand (its cookies are Secure, which a client library keeps off
    plain HTTP; browsers allow them on loopback, and the runner reaches the desk on its network)."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, headers={"Cookie": cookies} if cookies else {})
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=30) as reply:
            return reply.status, dict(reply.headers), reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def test_the_deployed_review_desk_signs_a_reviewer_in_and_lists_their_queue_from_the_gateway(
    deployed: Deployment,
) -> None:
    desk = f"http://{deployed.review}"
    assert fetch(f"{desk}/healthz")[0] == 200
    status, headers, _ = fetch(f"{desk}/")
    assert status == 303 and headers["location"] == "/login"
    status, headers, page = fetch(f"{desk}/login")
    assert status == 200 and "default-src 'none'" in headers["content-security-policy"]
    login_cookie = headers["set-cookie"].split(";")[0]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf and login_cookie.startswith("__Host-candor-login=")
    # Without the form's CSRF token the sign-in is refused; with it, the token opens a session.
    assert fetch(f"{desk}/login", {"token": deployed.reviewer_token}, login_cookie)[0] == 403
    status, headers, _ = fetch(f"{desk}/login", {"token": deployed.reviewer_token, "csrf": csrf.group(1)}, login_cookie)
    assert status == 303 and "__Host-candor-session=" in headers["set-cookie"]
    assert "Secure" in headers["set-cookie"] and "HttpOnly" in headers["set-cookie"]
    session = headers["set-cookie"].split(";")[0]
    status, _, queue = fetch(f"{desk}/", cookies=session)
    assert status == 200 and "Searches waiting for you" in queue and "e2e-reviewer" in queue
