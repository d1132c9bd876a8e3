"""The review desk's parts: its settings refuse unsafe set-ups, sessions are sealed and expire,
photos become figures whose zoom stays on the face and inside the photo, and its requests are
counted by route template, never by path."""

from __future__ import annotations

import io
import time
import warnings
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from PIL import Image
from prometheus_client import REGISTRY

from candor.common.v1 import common_pb2
from candor.gateway.v1 import gateway_pb2
from candor_kit import ConfigError, EnvReader
from candor_kit.aes_keys import generate_aes_key
from candor_kit.keys import generate_token_keys
from candor_review import ReviewSettings
from candor_review.app import create_app
from candor_review.compare import CANVAS, LEFT_EYE, RIGHT_EYE, Look, LookError, shown
from candor_review.session import LOGIN_COOKIE, SESSION_COOKIE, Sealer, Session, same_token

with warnings.catch_warnings():
    # Starlette would have its TestClient on httpx2; httpx, which the desk itself uses, still serves.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    keys, session_key = tmp_path / "token-keys.pem", tmp_path / "session-key"
    keys.write_bytes(generate_token_keys()[1])
    session_key.write_bytes(generate_aes_key())
    return {
        "CANDOR_REVIEW_GATEWAY": "127.0.0.1:50051",
        "CANDOR_REVIEW_SESSION_KEY_FILE": str(session_key),
        "CANDOR_GATEWAY_JWT_ISSUER": "candor-test",
        "CANDOR_GATEWAY_JWT_KEYS_FILE": str(keys),
    }


def test_a_loopback_desk_starts_with_its_defaults(env: dict[str, str]) -> None:
    settings = ReviewSettings.from_env(EnvReader(env))
    assert (settings.host, settings.port, settings.gateway) == ("127.0.0.1", 8443, "127.0.0.1:50051")
    assert settings.oidc is None and not settings.https and len(settings.session_key) == 32
    assert settings.metrics_address == ""
    served = ReviewSettings.from_env(EnvReader({**env, "CANDOR_METRICS_ADDRESS": "127.0.0.1:9464"}))
    assert served.metrics_address == "127.0.0.1:9464"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"CANDOR_REVIEW_ADDRESS": "0.0.0.0:8443"}, "not a loopback address and no TLS certificate"),
        ({"CANDOR_REVIEW_GATEWAY": "gateway:50051"}, "is a network address and no CA is set"),
        ({"CANDOR_REVIEW_SESSION_KEY_FILE": ""}, "CANDOR_REVIEW_SESSION_KEY_FILE is required"),
        ({"CANDOR_GATEWAY_JWT_KEYS_FILE": ""}, "set one of CANDOR_GATEWAY_JWT_KEYS_FILE"),
        ({"CANDOR_REVIEW_ADDRESS": "nowhere"}, "is not host:port"),
        ({"CANDOR_REVIEW_OIDC_ISSUER": "https://idp.example"}, "OpenID Connect needs all four settings"),
        ({"CANDOR_REVIEW_TLS_CERT": "/etc/hostname"}, "go together"),
        ({"CANDOR_METRICS_ADDRESS": "9464:x"}, "CANDOR_METRICS_ADDRESS='9464:x' is not host:port"),
    ],
)
def test_an_unsafe_or_incomplete_configuration_is_refused(
    env: dict[str, str], changes: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        ReviewSettings.from_env(EnvReader({**env, **changes}))


def test_a_malformed_session_key_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "short-key"
    bad.write_text("c2hvcnQ=\n")
    with pytest.raises(ConfigError, match=r"session key .* must be 32 bytes"):
        ReviewSettings.from_env(EnvReader({**env, "CANDOR_REVIEW_SESSION_KEY_FILE": str(bad)}))


def test_network_addresses_are_allowed_only_when_said_and_oidc_needs_https(env: dict[str, str], tmp_path: Path) -> None:
    secret = tmp_path / "client-secret"
    secret.write_text("s3cret\n")
    allowed = {
        **env,
        "CANDOR_REVIEW_ADDRESS": "0.0.0.0:8443",
        "CANDOR_REVIEW_PLAINTEXT": "allow",
        "CANDOR_REVIEW_GATEWAY": "gateway:50051",
        "CANDOR_REVIEW_GATEWAY_PLAINTEXT": "allow",
        "CANDOR_REVIEW_OIDC_ISSUER": "https://idp.example/realms/candor/",
        "CANDOR_REVIEW_OIDC_CLIENT_ID": "review-desk",
        "CANDOR_REVIEW_OIDC_CLIENT_SECRET_FILE": str(secret),
        "CANDOR_REVIEW_PUBLIC_URL": "https://review.example",
    }
    settings = ReviewSettings.from_env(EnvReader(allowed))
    assert settings.oidc is not None
    assert settings.oidc.issuer == "https://idp.example/realms/candor"
    assert settings.oidc.redirect_uri == "https://review.example/oidc/callback"
    assert "s3cret" not in repr(settings)
    with pytest.raises(ConfigError, match="must be an https:// URL"):
        ReviewSettings.from_env(EnvReader({**allowed, "CANDOR_REVIEW_OIDC_ISSUER": "http://idp.example"}))


def test_a_session_is_sealed_and_opens_only_unaltered_unexpired_and_under_its_own_name() -> None:
    sealer = Sealer(bytes(range(32)))
    session = Session("rita", ("reviewer",), "header.claims.signature", "csrf-token", int(time.time()) + 60)
    sealed = sealer.seal_session(session)
    assert "rita" not in sealed and "header.claims" not in sealed
    assert sealer.open_session(sealed) == session
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    assert sealer.open_session(tampered) is None
    assert sealer.open_session(sealed, now=time.time() + 61) is None
    assert Sealer(bytes(32)).open_session(sealed) is None  # another key
    assert sealer.open(LOGIN_COOKIE, sealed) is None  # moved to another cookie
    assert sealer.open(SESSION_COOKIE, "%%%") is None and sealer.open(SESSION_COOKIE, "x" * 9000) is None


def test_csrf_tokens_compare_exactly() -> None:
    assert same_token("abc", "abc")
    assert not same_token("abc", "abd") and not same_token("abc", None) and not same_token("", "")


def _photo(width: int, height: int, box: tuple[int, int, int, int] | None) -> gateway_pb2.Photo:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 90)).save(buffer, format="JPEG")
    photo = gateway_pb2.Photo(image=buffer.getvalue(), sha256="ab" * 32)
    if box:
        photo.face_box.CopyFrom(common_pb2.Box(x=box[0], y=box[1], width=box[2], height=box[3]))
    return photo


def test_a_photo_draws_the_face_box_and_its_zoom_stays_on_the_face_inside_the_photo() -> None:
    face = shown(_photo(600, 800, (500, 20, 90, 100)))
    assert face is not None and face.box == (500, 20, 90, 100)
    assert face.view_box(Look(zoom=0)) == "0 0 600 800"
    assert face.data_uri.startswith("data:image/jpeg;base64,")
    left, top, width, height = map(float, face.view_box(Look()).split())
    assert width == height == 180.0  # 1.8 times the face
    assert left + width <= 600 and top >= 0  # pushed back inside the photo
    assert left <= 500 and left + width >= 590 and top <= 20 and top + height >= 120  # the face is in view
    assert float(face.view_box(Look(zoom=4)).split()[2]) == 45.0  # closer: a quarter of the side
    panned = list(map(float, face.view_box(Look(dx=1)).split()))
    assert panned[0] == 500 + 45 - 90 + 45  # a quarter of the view to the right of the face's centre
    unboxed = shown(_photo(300, 300, None))
    assert unboxed is not None and unboxed.box is None and unboxed.view_box(Look()) == "0 0 300 300"


def test_aligned_faces_land_their_eyes_on_the_same_canvas_points() -> None:
    """Two photos of different size, scale and tilt: after each one's transform, both pairs of eyes
    lie on the canvas's two eye points, so the faces can be overlaid."""
    for eyes in (((100.0, 200.0), (160.0, 180.0)), ((310.0, 95.0), (420.0, 130.0))):
        photo = _photo(600, 800, (50, 50, 200, 200))
        photo.eyes.extend([common_pb2.Point(x=x, y=y) for x, y in eyes])
        face = shown(photo)
        assert face is not None and face.can_align
        a, b, c, d, e, f = map(float, face.transform().removeprefix("matrix(").removesuffix(")").split())
        landed = [(a * x + c * y + e, b * x + d * y + f) for x, y in eyes]
        assert [tuple(round(v, 3) for v in point) for point in landed] == [LEFT_EYE, RIGHT_EYE]
        assert face.view_box(Look(mode="overlay")) == f"0 0 {CANVAS:g} {CANVAS:g}"
    assert shown(_photo(100, 100, None)).can_align is False  # type: ignore[union-attr]


def test_a_look_is_read_from_links_and_written_back_without_its_defaults() -> None:
    look = Look.parse({"view": "overlay", "zoom": "2", "dx": "-1", "box": "off", "opacity": "75"})
    assert look == Look(mode="overlay", zoom=2, dx=-1, box=False, opacity=75)
    assert Look.parse(dict(parse_qsl(look.query()))) == look
    assert Look().query() == "" and Look().query(zoom=0) == "zoom=0"
    for bad in ({"view": "x"}, {"zoom": "3"}, {"dx": "99"}, {"opacity": "1e3"}, {"zoom": "01234"}):
        with pytest.raises(LookError):
            Look.parse(bad)


def test_what_is_not_an_image_is_not_embedded() -> None:
    assert shown(gateway_pb2.Photo(image=b"<svg onload=alert(1)>")) is None
    buffer = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buffer, format="TIFF")
    assert shown(gateway_pb2.Photo(image=buffer.getvalue())) is None


def handled(route: str, method: str, code: str) -> float:
    """The desk's request count for one route template, method and status code."""
    labels = {"route": route, "method": method, "code": code}
    return REGISTRY.get_sample_value("candor_http_requests_handled_total", labels) or 0.0


def test_requests_are_counted_by_route_template_and_never_by_path(env: dict[str, str]) -> None:
    settings = ReviewSettings.from_env(EnvReader(env))
    search, unknown, other = (
        ("/searches/{search_id:str}", "GET", "303"),
        ("unmatched", "GET", "404"),
        ("/", "other", "405"),
    )
    before = [handled(*labels) for labels in (search, unknown, other)]
    with TestClient(create_app(settings), base_url="https://127.0.0.1") as desk:
        assert desk.get("/searches/4d1f0c2e-case-77", follow_redirects=False).status_code == 303  # sign in first
        assert desk.get("/private/CASE-2026-0042").status_code == 404
        assert desk.request("PURGE", "/").status_code == 405
    after = [handled(*labels) for labels in (search, unknown, other)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
    timed = {"route": "/searches/{search_id:str}"}
    assert (REGISTRY.get_sample_value("candor_http_request_handling_seconds_count", timed) or 0) >= 1
    values = {value for family in REGISTRY.collect() for sample in family.samples for value in sample.labels.values()}
    assert not {"/searches/4d1f0c2e-case-77", "/private/CASE-2026-0042", "PURGE"} & values


def test_a_failure_inside_the_desk_is_a_500_page_with_the_security_headers_and_counted(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import candor_review.desk as desk_app

    def broken() -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr(desk_app, "new_csrf", broken)
    settings = ReviewSettings.from_env(EnvReader(env))
    before = handled("/login", "GET", "500")
    with TestClient(create_app(settings), base_url="https://127.0.0.1", raise_server_exceptions=False) as desk:
        failed = desk.get("/login")
    assert failed.status_code == 500
    assert failed.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert failed.headers["X-Frame-Options"] == "DENY" and failed.headers["Cache-Control"] == "no-store"
    assert "a bug" not in failed.text and "RuntimeError" not in failed.text and "try again" in failed.text
    assert handled("/login", "GET", "500") - before == 1


def test_the_desks_spans_are_named_by_route_never_by_path(
    env: dict[str, str], span_exporter: InMemorySpanExporter
) -> None:
    settings = ReviewSettings.from_env(EnvReader(env))
    span_exporter.clear()
    with TestClient(create_app(settings), base_url="https://127.0.0.1") as desk:
        desk.get("/searches/4d1f0c2e-case-77", follow_redirects=False)
        desk.get("/private/CASE-2026-0042")
    names = {span.name for span in span_exporter.get_finished_spans()}
    assert {"GET /searches/{search_id:str}", "GET unmatched"} <= names, names
    assert not any("4d1f0c2e" in name or "CASE-2026" in name for name in names)


def test_every_template_and_static_file_of_the_desk_is_packaged() -> None:
    """The images install the desk with pip: a file the package data leaves out (the desk's script,
    say) would be missing in the container though present in a checkout."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["candor_review"]
    package = root / "services" / "review" / "candor_review"
    packaged = {path for pattern in globs for path in package.glob(pattern)}
    shipped = {path for folder in ("templates", "static") for path in (package / folder).iterdir() if path.is_file()}
    assert shipped - packaged == set()
