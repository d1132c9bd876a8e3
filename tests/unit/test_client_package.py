"""candor-client as a package of its own: the wheel holds the client and the generated API and
nothing of Candor's services, it imports with none of Candor installed, and its client-credentials
token source fetches, keeps and renews a service account's token (against a STAND-IN identity
provider: no real one can run here; httpx's MockTransport answers as a token endpoint does)."""

from __future__ import annotations

import base64
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import httpx
import pytest

from candor_client import ClientCredentials, StaticToken, TokenError, bearer_metadata

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from build_client import build  # noqa: E402


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_holds_the_client_and_the_api_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if not name.startswith("candor_client-")}
    assert packages == {"candor", "candor_client"}
    assert {"candor_client/py.typed", "candor/gateway/v1/gateway_pb2.pyi", "candor/events/v1/events_pb2.py"} <= set(
        names
    )
    metadata = zipfile.ZipFile(wheel).read("candor_client-1.0.0.dist-info/METADATA").decode()
    assert "Name: candor-client" in metadata and "Requires-Dist: grpcio" in metadata


def test_the_wheel_imports_with_none_of_candor_installed(wheel: Path, tmp_path: Path) -> None:
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    # -S: no .pth files, so neither Candor's editable install nor anything but the wheel and the
    # third-party packages it depends on is on the path.
    code = (
        "import sys; sys.path[:0] = sys.argv[1:]\n"
        "from candor_client import GatewayClient, ClientCredentials, EventFollower, consumer_config\n"
        "import candor_client, candor.gateway.v1.gateway_pb2 as g\n"
        "assert candor_client.__file__.startswith(sys.argv[1]), candor_client.__file__\n"
        "try:\n    import candor_kit\nexcept ModuleNotFoundError:\n    print('alone')\n"
    )
    run = subprocess.run(
        [sys.executable, "-S", "-c", code, str(unpacked), sysconfig.get_paths()["purelib"]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "alone"


class StandInTokenEndpoint:
    """A token endpoint: checks the client's id and secret (HTTP Basic) and the grant type."""

    def __init__(self, lifetime_s: int = 300) -> None:
        self.lifetime_s = lifetime_s
        self.issued = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        expected = "Basic " + base64.b64encode(b"agency-cms:s3cret").decode()
        if request.headers.get("authorization") != expected:
            return httpx.Response(401, json={"error": "invalid_client"})
        if form.get("grant_type") != "client_credentials":
            return httpx.Response(400, json={"error": "unsupported_grant_type"})
        self.issued += 1
        return httpx.Response(200, json={"access_token": f"token-{self.issued}", "expires_in": self.lifetime_s})


def credentials(tmp_path: Path, endpoint: StandInTokenEndpoint, secret: str = "s3cret") -> ClientCredentials:
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret + "\n")
    return ClientCredentials(
        "https://idp.test/token",
        "agency-cms",
        secret_file,
        http=httpx.Client(transport=httpx.MockTransport(endpoint)),
    )


def test_a_service_accounts_token_is_kept_until_it_nears_expiry_then_renewed(tmp_path: Path) -> None:
    endpoint = StandInTokenEndpoint(lifetime_s=300)
    source = credentials(tmp_path, endpoint)
    assert [source.token() for _ in range(3)] == ["token-1"] * 3
    assert endpoint.issued == 1
    short = StandInTokenEndpoint(lifetime_s=30)  # expires within the minute kept in hand
    source = credentials(tmp_path, short)
    assert [source.token(), source.token()] == ["token-1", "token-2"]
    assert bearer_metadata(StaticToken("abc")) == (("authorization", "Bearer abc"),)


def test_a_refused_client_gets_a_message_that_says_what_to_check(tmp_path: Path) -> None:
    source = credentials(tmp_path, StandInTokenEndpoint(), secret="wrong")
    with pytest.raises(TokenError, match=r"refused client 'agency-cms' \(HTTP 401\): check the client id and secret"):
        source.token()
