"""The reviewer web app's configuration, from the environment (catalogue.WEB_SERVICES["review"]).

It refuses to start on an unsafe combination: plain HTTP on a network address without
``CANDOR_REVIEW_PLAINTEXT=allow`` (an ingress that terminates TLS), plaintext gRPC to a network
gateway without ``CANDOR_REVIEW_GATEWAY_PLAINTEXT=allow``, a missing or malformed session key, or
half an OpenID Connect configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from candor_kit import ConfigError, EnvReader, catalogue
from candor_kit.aes_keys import read_aes_key
from candor_kit.setting import Setting
from candor_kit.settings import is_loopback, read_metrics_address
from candor_kit.tokens import TokenVerifier, read_token_verifier


@dataclass(frozen=True)
class OidcSettings:
    """Sign-in through the agency's OpenID Connect provider (authorization code with PKCE)."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    #: Where the provider sends the browser back: <public URL>/oidc/callback.
    redirect_uri: str


@dataclass(frozen=True)
class ReviewSettings:
    """Everything the web app needs to run."""

    host: str
    port: int
    gateway: str
    tokens: TokenVerifier
    session_key: bytes = field(repr=False)
    session_ttl_s: int = 28800
    tls_cert: str = ""
    tls_key: str = ""
    gateway_ca: str = ""
    oidc: OidcSettings | None = None
    timeout_s: float = 30.0
    #: host:port of the Prometheus /metrics listener; empty: none.
    metrics_address: str = ""

    @property
    def https(self) -> bool:
        """Whether the app itself serves HTTPS."""
        return bool(self.tls_cert)

    @classmethod
    def from_env(cls, env: EnvReader | None = None) -> ReviewSettings:
        """Read and check the settings; raises ConfigError naming every bad value."""
        env = env or EnvReader()
        host, port = _host_port(env, catalogue.REVIEW_ADDRESS)
        cert, key = env.get(catalogue.REVIEW_TLS_CERT), env.get(catalogue.REVIEW_TLS_KEY)
        if bool(cert) != bool(key):
            env.problem("CANDOR_REVIEW_TLS_CERT and CANDOR_REVIEW_TLS_KEY go together")
        if host and not cert and not is_loopback(host) and env.get(catalogue.REVIEW_PLAINTEXT) != "allow":
            # Session cookies and faces must not cross a network in the clear by accident.
            env.problem(
                f"CANDOR_REVIEW_ADDRESS={host}:{port} is not a loopback address and no TLS certificate is set; "
                "set CANDOR_REVIEW_TLS_CERT/_KEY, or CANDOR_REVIEW_PLAINTEXT=allow behind an ingress that "
                "terminates TLS"
            )
        gateway_host, gateway_port = _host_port(env, catalogue.REVIEW_GATEWAY)
        gateway_ca = env.get(catalogue.REVIEW_GATEWAY_CA)
        plaintext = env.get(catalogue.REVIEW_GATEWAY_PLAINTEXT)
        if gateway_host and not gateway_ca and not is_loopback(gateway_host) and plaintext != "allow":
            env.problem(
                f"CANDOR_REVIEW_GATEWAY={gateway_host}:{gateway_port} is a network address and no CA is set; set "
                "CANDOR_REVIEW_GATEWAY_CA, or CANDOR_REVIEW_GATEWAY_PLAINTEXT=allow behind a mesh that encrypts"
            )
        session_key = b""
        key_file = env.get(catalogue.REVIEW_SESSION_KEY_FILE)
        if key_file:
            try:
                session_key = read_aes_key(Path(key_file), "session key")
            except ConfigError as exc:
                env.problem(f"CANDOR_REVIEW_SESSION_KEY_FILE: {exc}")
        tokens = read_token_verifier(env)
        oidc = _read_oidc(env)
        ttl = env.get(catalogue.REVIEW_SESSION_TTL_S)
        timeout = env.get(catalogue.REQUEST_TIMEOUT_S)
        metrics_address = read_metrics_address(env)
        env.done()
        return cls(
            host=host,
            port=port,
            gateway=f"{gateway_host}:{gateway_port}",
            tokens=tokens,  # type: ignore[arg-type]  # None only when env.done() has raised
            session_key=session_key,
            session_ttl_s=ttl,
            tls_cert=cert,
            tls_key=key,
            gateway_ca=gateway_ca,
            oidc=oidc,
            timeout_s=timeout,
            metrics_address=metrics_address,
        )


def _host_port(env: EnvReader, setting: Setting) -> tuple[str, int]:
    value = env.get(setting) or ""
    host, _, port = value.rpartition(":")
    if value and (not host or not port.isdigit()):
        env.problem(f"{setting.name}={value!r} is not host:port")
        return "", 0
    return host.strip("[]"), int(port) if port.isdigit() else 0


def _read_oidc(env: EnvReader) -> OidcSettings | None:
    values = {
        setting.name: env.get(setting)
        for setting in (
            catalogue.REVIEW_OIDC_ISSUER,
            catalogue.REVIEW_OIDC_CLIENT_ID,
            catalogue.REVIEW_OIDC_CLIENT_SECRET_FILE,
            catalogue.REVIEW_PUBLIC_URL,
        )
    }
    if not any(values.values()):
        return None
    missing = [name for name, value in values.items() if not value]
    if missing:
        env.problem(f"OpenID Connect needs all four settings; missing {', '.join(missing)}")
        return None
    issuer, public = values["CANDOR_REVIEW_OIDC_ISSUER"], values["CANDOR_REVIEW_PUBLIC_URL"]
    for name, url in (("CANDOR_REVIEW_OIDC_ISSUER", issuer), ("CANDOR_REVIEW_PUBLIC_URL", public)):
        parts = urlsplit(url)
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname or "")):
            env.problem(f"{name} must be an https:// URL (http:// only on a loopback address)")
    try:
        secret = Path(values["CANDOR_REVIEW_OIDC_CLIENT_SECRET_FILE"]).read_text().strip()
    except OSError as exc:
        env.problem(f"CANDOR_REVIEW_OIDC_CLIENT_SECRET_FILE: {exc.strerror}")
        return None
    return OidcSettings(
        issuer.rstrip("/"), values["CANDOR_REVIEW_OIDC_CLIENT_ID"], secret, public.rstrip("/") + "/oidc/callback"
    )
