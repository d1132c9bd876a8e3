"""The local process stack: nats-server with JetStream and the five services, on loopback.

This is the developers' and CI's topology: the same services and subjects as the compose and
Kubernetes deployments, as local processes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from dotenv import dotenv_values

from candor_cli import compose as compose_model
from candor_cli.deploy_secrets import init_secrets
from candor_cli.processes import (
    StackError,
    alive,
    free_port,
    nats_server_binary,
    start_nats_server,
    terminate,
    wait_http,
    wait_port,
    wait_serving,
)
from candor_cli.stack_secrets import (
    ensure_aes_key,
    ensure_audit_signing_key,
    ensure_nats_passwords,
    ensure_service_token_digest,
    ensure_token_keys,
    nats_password_file,
)
from candor_kit import subjects
from candor_kit.bus import NatsLogin
from candor_kit.policy import DEFAULT_POLICY_YAML
from candor_kit.settings import INTERNAL_SERVICES
from candor_kit.tokens import issue_token, load_private_key

#: The issuer and audience of the local stack's tokens.
LOCAL_ISSUER = "candor-local"
AUDIENCE = "candor-gateway"
#: The local operator's roles: enough for the demo (search, enrol, delete, verify, export).
OPERATOR_ROLES = ("investigator", "gallery-admin", "auditor")

#: Start order; stop order is the reverse.
SERVICES = ("audit", "matcher", "embedder", "detector", "gateway")
#: The review desk, started once the gateway serves: an HTTP app on loopback, not on the bus.
REVIEW = "review"


def default_data_dir() -> Path:
    """CANDOR_DATA, else ~/.local/share/candor."""
    return Path(os.environ.get("CANDOR_DATA") or Path.home() / ".local" / "share" / "candor")


def metrics_key(service: str) -> str:
    """The key of a service's Prometheus listener in the stack's addresses."""
    return f"{service}-metrics"


def service_settings(
    name: str, data_dir: Path, *, policy: Path | None = None, allow_uncalibrated: bool
) -> dict[str, str]:
    """A service's own settings when its data lives under ``data_dir`` (the stack's layout).

    The audit service's signing key and the token keys are made on first use, in ``data_dir/secrets``;
    without a ``policy`` file the gateway gets ``data_dir/policy.yaml``, the default policy written
    on first use.
    """
    secrets = data_dir / "secrets"
    signing_key = ensure_audit_signing_key(data_dir) if name == "audit" else None
    internal = {}
    if name in INTERNAL_SERVICES:
        internal = {"CANDOR_SERVICE_TOKEN_SHA256_FILE": str(ensure_service_token_digest(data_dir))}
    if name == REVIEW:
        ensure_token_keys(data_dir)
        ensure_aes_key(data_dir, "review-session-key")
    if name == "gateway":
        ensure_token_keys(data_dir)
        ensure_aes_key(data_dir, "photo-key")
        if policy is None:
            policy = data_dir / "policy.yaml"
            if not policy.exists():
                policy.write_text(DEFAULT_POLICY_YAML)
    return internal | {
        "gateway": {
            "CANDOR_GATEWAY_JWT_ISSUER": LOCAL_ISSUER,
            "CANDOR_GATEWAY_JWT_KEYS_FILE": str(secrets / "token-keys.pem"),
            "CANDOR_GATEWAY_PHOTO_KEY_FILE": str(secrets / "photo-key"),
            "CANDOR_GATEWAY_POLICY_FILE": str(policy),
            "CANDOR_MODEL_REGISTRY": str(data_dir / "models"),
            # A developer's stack runs before any calibration exists; production sets false.
            "CANDOR_GATEWAY_ALLOW_UNCALIBRATED": "true" if allow_uncalibrated else "false",
        },
        "matcher": {"CANDOR_MATCHER_DATA_DIR": str(data_dir / "gallery")},
        REVIEW: {
            "CANDOR_GATEWAY_JWT_ISSUER": LOCAL_ISSUER,
            "CANDOR_GATEWAY_JWT_KEYS_FILE": str(secrets / "token-keys.pem"),
            "CANDOR_REVIEW_SESSION_KEY_FILE": str(secrets / "review-session-key"),
        },
        "audit": {
            "CANDOR_AUDIT_DB": str(data_dir / "audit" / "audit.db"),
            "CANDOR_AUDIT_SIGNING_KEY_FILE": str(signing_key),
        },
    }.get(name, {})


@dataclass
class StackState:
    """What ``stack.json`` records about a running stack."""

    nats_url: str
    addresses: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)
    #: The key that signs tokens the gateway trusts, and their issuer.
    token_key: str = ""
    issuer: str = LOCAL_ISSUER

    @property
    def gateway(self) -> str:
        """The gateway's host:port."""
        return self.addresses["gateway"]


class LocalStack:
    """Starts, watches and stops the local process stack under one data folder."""

    def __init__(
        self,
        data_dir: Path,
        policy: Path | None = None,
        extra_env: dict[str, str] | None = None,
        require_calibration: bool = False,
        compose: list[Path] | None = None,
        postgres_dsn: str = "",
    ) -> None:
        self.data = data_dir.resolve()
        self.policy = policy.resolve() if policy else None
        self.extra_env = extra_env or {}
        self.state_file = self.data / "stack.json"
        self.token_key = self.data / "secrets" / "token-signing.pem"
        self.logs = self.data / "logs"
        self.registry = self.data / "models"
        self.require_calibration = require_calibration
        # Compose mode: the services get the settings the compose files give them, nats-server
        # runs their nats.conf with its per-service users, and secrets come from `secrets init`.
        self.compose = compose_model.load(compose) if compose else None
        self.compose_dir = compose[0].resolve().parent if compose else None
        self.deploy_secrets = self.data / "deploy-secrets"
        # A PostgreSQL for the audit chain in compose mode (the compose `postgres` service cannot run here).
        self.postgres_dsn = postgres_dsn

    # --- state ---------------------------------------------------------------------------------

    def state(self) -> StackState | None:
        """The recorded state, if a stack was started here."""
        if not self.state_file.exists():
            return None
        raw = json.loads(self.state_file.read_text())
        return StackState(
            raw["nats_url"],
            raw["addresses"],
            raw.get("pids", {}),
            raw.get("token_key", str(self.token_key)),
            raw.get("issuer", LOCAL_ISSUER),
        )

    def _save(self, state: StackState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.__dict__, indent=2))
        tmp.replace(self.state_file)

    def running(self) -> bool:
        """Whether every recorded process is alive."""
        state = self.state()
        return bool(state and state.pids and all(alive(pid) for pid in state.pids.values()))

    def nats_login(self, role: str = "operator") -> NatsLogin:
        """How ``role`` (a key of ``subjects.ROLES``) logs in to this stack's nats-server."""
        state = self.state()
        if state is None:
            raise StackError(f"no stack in {self.data}; run `candor stack up`")
        if self.compose is not None:
            password = self.deploy_secrets / f"nats-password-{role}"
        else:
            password = nats_password_file(self.data, role)
        return NatsLogin(state.nats_url, role, str(password), subjects.inbox_prefix(role))

    def token(self, user: str = "local-operator", roles: tuple[str, ...] = OPERATOR_ROLES, ttl_s: int = 3600) -> str:
        """A fresh token from this stack's signing key (made at first start), for ``user``."""
        state = self.state()
        if state is None:
            raise StackError(f"no stack in {self.data}; run `candor stack up`")
        key, issuer = Path(state.token_key), state.issuer
        if not key.exists():
            raise StackError(f"no token key in {key.parent}; start the stack first")
        return issue_token(load_private_key(key.read_bytes()), user, roles, ttl_s, issuer, AUDIENCE)

    # --- start ---------------------------------------------------------------------------------

    def up(self, timeout_s: float = 180.0) -> StackState:
        """Start nats-server and every service, and wait until each reports SERVING."""
        if self.running():
            state = self.state()
            assert state is not None
            return state
        for folder in (self.data, self.logs, self.data / "secrets"):
            folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data / "secrets", 0o700)
        ensure_token_keys(self.data)
        nats_port = free_port()
        state = StackState(
            nats_url=f"nats://127.0.0.1:{nats_port}",
            addresses={name: f"127.0.0.1:{free_port()}" for name in SERVICES},
            token_key=str(self.token_key),
        )
        # Each service's Prometheus /metrics listener, on loopback like everything else here.
        state.addresses.update({metrics_key(name): f"127.0.0.1:{free_port()}" for name in SERVICES})
        if self.compose is not None:
            if not self.deploy_secrets.exists():
                init_secrets(self.deploy_secrets)
            state.token_key = str(self.deploy_secrets / "token-signing.pem")
            state.issuer = compose_model.service_environment(self.compose, "gateway")["CANDOR_GATEWAY_JWT_ISSUER"]
            if self.postgres_dsn:
                (self.deploy_secrets / "audit-postgres-dsn").write_text(self.postgres_dsn + "\n")
            state.addresses.update({f"{name}-health": f"127.0.0.1:{free_port()}" for name in SERVICES})
        try:
            state.pids["nats"] = self._start_nats(nats_port)
            self._save(state)
            for name in SERVICES:
                state.pids[name] = self._spawn_service(name, state)
                self._save(state)
            for name in SERVICES:
                self._wait_service(name, state, timeout_s)
            state.addresses[REVIEW] = f"127.0.0.1:{free_port()}"
            state.addresses[metrics_key(REVIEW)] = f"127.0.0.1:{free_port()}"
            state.pids[REVIEW] = self._spawn_service(REVIEW, state)
            self._save(state)
            self._wait_service(REVIEW, state, timeout_s)
        except BaseException:
            self.down()
            raise
        return state

    def start_service(self, name: str, timeout_s: float = 120.0) -> None:
        """(Re)start one service of a running stack."""
        state = self.state()
        if state is None:
            raise StackError(f"no stack is running in {self.data}; start one with `candor stack up`")
        state.pids[name] = self._spawn_service(name, state)
        self._save(state)
        self._wait_service(name, state, timeout_s)

    def add_replica(self, name: str, timeout_s: float = 120.0, settings: Mapping[str, str] | None = None) -> str:
        """Start one more process of a service beside the first (another import worker, another
        request/reply responder in its queue group; with ``settings``, another model's detector or
        embedder, say); returns its key in the state, ``<name>#<n>``.

        Not for the matcher on the embedded backend: one process owns the gallery's shard.
        """
        state = self.state()
        if state is None:
            raise StackError(f"no stack is running in {self.data}; start one with `candor stack up`")
        key = f"{name}#{1 + sum(1 for other in state.pids if other.split('#')[0] == name)}"
        state.addresses[key] = f"127.0.0.1:{free_port()}"
        state.addresses[metrics_key(key)] = f"127.0.0.1:{free_port()}"
        own = {"CANDOR_GRPC_ADDRESS": state.addresses[key], "CANDOR_METRICS_ADDRESS": state.addresses[metrics_key(key)]}
        env = self._service_env(name, state) | dict(settings or {}) | own
        state.pids[key] = self._spawn_service(name, state, env, key)
        self._save(state)
        self._wait_service(key, state, timeout_s)
        return key

    def stop_service(self, name: str, timeout_s: float = 20.0) -> None:
        """Stop one service gracefully (SIGTERM, then SIGKILL after the timeout)."""
        state = self.state()
        if state is None or name not in state.pids:
            return
        terminate(state.pids.pop(name), timeout_s)
        self._save(state)

    def _start_nats(self, port: int) -> int:
        # The child keeps its own copy of the descriptor; the parent's closes with the block.
        with open(self.logs / "nats.log", "ab") as log:
            if self.compose is None:
                return start_nats_server(self.data, port, log, passwords=ensure_nats_passwords(self.data)).pid
            return self._start_compose_nats(port, log)

    def _start_compose_nats(self, port: int, log: IO[bytes]) -> int:
        """nats-server with the compose stack's own config files, on a loopback port."""
        assert self.compose is not None and self.compose_dir is not None
        folder = self.data / "nats-conf"
        folder.mkdir(exist_ok=True)
        base = self.compose_dir
        for mount in self.compose["services"]["nats"]["volumes"]:
            source, target = mount.split(":")[:2]
            if target.startswith("/etc/nats/"):
                shutil.copyfile(base / source, folder / Path(target).name)
        config = folder / "nats.conf"
        store = self.data / "nats"
        config.write_text(re.sub(r'store_dir: "[^"]*"', f'store_dir: "{store}"', config.read_text()))
        env = {**os.environ, **dotenv_values(self.deploy_secrets / "nats.env")}
        command = [nats_server_binary(), "-c", str(config), "-a", "127.0.0.1", "-p", str(port), "-m", "0"]
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
        try:
            wait_port(port, 30)
        except StackError:
            process.kill()
            raise
        return process.pid

    def _service_env(self, name: str, state: StackState) -> dict[str, str]:
        if name == REVIEW:
            return self._review_env(state)
        if self.compose is not None:
            own = compose_model.local_environment(
                self.compose,
                name,
                data=self.data,
                secrets=self.deploy_secrets,
                nats_url=state.nats_url,
                grpc_address=state.addresses[name],
                health_address=state.addresses[f"{name}-health"],
                postgres=bool(self.postgres_dsn),
                base=self.compose_dir or Path(),
            )
            for volume in compose_model.volume_targets(self.compose, name).values():
                (self.data / volume).mkdir(exist_ok=True)
            own["CANDOR_METRICS_ADDRESS"] = state.addresses.get(metrics_key(name), "")
            inherited = {key: value for key, value in os.environ.items() if not key.startswith("CANDOR_")}
            return {**inherited, "PYTHONUNBUFFERED": "1", **own, **self.extra_env}
        env = {
            **os.environ,
            "CANDOR_NATS_URL": state.nats_url,
            # Each service logs in as its own NATS user, as in compose and Kubernetes.
            "CANDOR_NATS_USER": name,
            "CANDOR_NATS_PASSWORD_FILE": str(nats_password_file(self.data, name)),
            "CANDOR_GRPC_ADDRESS": state.addresses[name],
            "CANDOR_METRICS_ADDRESS": state.addresses.get(metrics_key(name), ""),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        env.update(
            service_settings(
                name,
                self.data,
                policy=self.policy,
                allow_uncalibrated=not self.require_calibration,
            )
        )
        return env

    def _review_env(self, state: StackState) -> dict[str, str]:
        """The review desk's settings: on loopback, calling this stack's gateway."""
        if self.compose is not None:
            own = compose_model.local_environment(
                self.compose, REVIEW, data=self.data, secrets=self.deploy_secrets, base=self.compose_dir or Path()
            )
        else:
            own = service_settings(REVIEW, self.data, allow_uncalibrated=False)
        inherited = {key: value for key, value in os.environ.items() if not key.startswith("CANDOR_")}
        return {
            **inherited,
            "PYTHONUNBUFFERED": "1",
            **own,
            "CANDOR_REVIEW_ADDRESS": state.addresses[REVIEW],
            "CANDOR_REVIEW_GATEWAY": state.addresses["gateway"],
            "CANDOR_METRICS_ADDRESS": state.addresses.get(metrics_key(REVIEW), ""),
        }

    def _spawn_service(self, name: str, state: StackState, env: dict[str, str] | None = None, key: str = "") -> int:
        with open(self.logs / f"{key or name}.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", f"candor_{name}"],
                env=env or self._service_env(name, state),
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        return process.pid

    def _wait_service(self, name: str, state: StackState, timeout_s: float) -> None:
        pid = state.pids[name]
        wait = wait_http if name == REVIEW else wait_serving
        try:
            wait(state.addresses[name], timeout_s, alive=lambda: alive(pid))
        except StackError as exc:
            tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
            raise StackError(f"{name} failed to start: {exc}\n--- {name}.log (tail) ---\n{tail}") from exc

    # --- stop ----------------------------------------------------------------------------------

    def down(self, timeout_s: float = 20.0) -> None:
        """Stop the services in reverse order, then nats-server."""
        state = self.state()
        if state is None:
            return
        replicas = [key for key in state.pids if "#" in key]
        for name in (*replicas, REVIEW, *reversed(SERVICES), "nats"):
            pid = state.pids.pop(name, None)
            if pid is not None:
                terminate(pid, timeout_s)
        self._save(state)
