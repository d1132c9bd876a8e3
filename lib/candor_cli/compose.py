"""Reading deploy/compose the way ``docker compose config`` does, without Docker.

``load`` interpolates ``${VAR}`` from the ``.env`` file (strictly: an unset variable without a
default is an error, where docker compose would quietly substitute ""), resolves YAML anchors and
merge keys, and merges several files in order. ``local_environment`` turns a service's container
environment into one for the local process stack, so the stack can run the services with the
settings compose gives them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VARIABLE = re.compile(rf"\$(?:\$|\{{(?P<name>{_NAME})(?:(?P<op>:?[-?])(?P<arg>[^}}]*))?\}}|(?P<bare>{_NAME}))")


class ComposeError(ValueError):
    """A compose file that cannot be read, interpolated or merged."""


def interpolate(value: Any, variables: Mapping[str, str | None], where: str = "") -> Any:
    """Substitute ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}`` and ``$$``."""
    if isinstance(value, dict):
        return {key: interpolate(item, variables, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, variables, f"{where}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        current = variables.get(name)
        unset = current is None or (current == "" and op is not None and op.startswith(":"))
        if not unset:
            return str(current)
        if op in ("-", ":-"):
            return arg or ""
        if op in ("?", ":?"):
            raise ComposeError(f"{where}: {name} is not set: {arg}")
        raise ComposeError(f"{where}: variable {name} is not set (add it to .env)")

    return _VARIABLE.sub(substitute, value)


def merge(base: Any, override: Any) -> Any:
    """Compose's merge of a later file onto an earlier one: maps merge, lists extend, scalars replace."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list):
        return base + [item for item in override if item not in base]
    return override


def load(files: list[Path], env_file: Path | None = None) -> dict[str, Any]:
    """The merged, interpolated compose model of ``files``; ``env_file`` defaults to the first file's .env."""
    env_file = env_file or files[0].parent / ".env"
    variables = dotenv_values(env_file) if env_file.exists() else {}
    model: dict[str, Any] = {}
    for path in files:
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ComposeError(f"{path}: {exc}") from exc
        if not isinstance(document, dict):
            raise ComposeError(f"{path}: not a compose mapping")
        model = merge(model, interpolate(document, variables, path.name))
    # Extension fields (x-*) exist for anchors; they are not part of the model.
    return {key: value for key, value in model.items() if not key.startswith("x-")}


def service_environment(model: Mapping[str, Any], service: str) -> dict[str, str]:
    """A service's environment as name → value strings, from either compose form (map or list)."""
    environment = model["services"][service].get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {str(name): "" if value is None else str(value) for name, value in environment.items()}


def mounts(model: Mapping[str, Any], service: str) -> dict[str, str]:
    """Container path → source (a named volume or a host path), for every mount of a service, in
    either compose form (``source:target[:mode]`` or a map)."""
    pairs = (
        (item["source"], item["target"]) if isinstance(item, dict) else item.split(":")[:2]
        for item in model["services"][service].get("volumes") or []
    )
    return {target: source for source, target in pairs}


def volume_targets(model: Mapping[str, Any], service: str) -> dict[str, str]:
    """Container path → named volume, for the named volumes a service mounts."""
    named = model.get("volumes") or {}
    return {target: source for target, source in mounts(model, service).items() if source in named}


def bind_targets(model: Mapping[str, Any], service: str, base: Path) -> dict[str, Path]:
    """Container path → file or folder on this machine, for the host paths a service binds."""
    return {target: base / source for target, source in mounts(model, service).items() if source[0] in "./"}


def local_environment(
    model: Mapping[str, Any],
    service: str,
    *,
    data: Path,
    secrets: Path,
    nats_url: str = "",
    grpc_address: str = "",
    health_address: str = "",
    postgres: bool = False,
    base: Path = Path(),
) -> dict[str, str]:
    """The service's compose environment, rewritten for processes on this machine.

    Addresses become the loopback ones given (the review desk, on no bus, is given none),
    ``/run/secrets/X`` becomes ``secrets/X``, a bind mount's target becomes its file (relative to
    ``base``, the compose file's folder), paths on a named volume move under ``data/<volume>``, and
    trace export is dropped (no collector here). No Qdrant
    server can run here, so a matcher set to ``server`` runs the embedded backend as a stand-in.
    An audit service set to ``postgres`` keeps it when ``postgres`` says a server is provided (its
    connection string in ``secrets``), and otherwise keeps its chain in SQLite under ``data``.
    """
    environment = service_environment(model, service)
    volumes = volume_targets(model, service)
    secret_files = {name: Path(spec["file"]).name for name, spec in (model.get("secrets") or {}).items()}
    bound_files = bind_targets(model, service, base)
    local: dict[str, str] = {}
    for name, value in environment.items():
        if value in bound_files:
            value = str(bound_files[value])
        elif value.startswith("/run/secrets/"):
            secret = value.removeprefix("/run/secrets/")
            value = str(secrets / secret_files.get(secret, secret))
        for target, volume in volumes.items():
            if value == target or value.startswith(target + "/"):
                value = str(data / volume / value[len(target) :].lstrip("/"))
        local[name] = value
    # A service on the bus gets this machine's addresses; the review desk, on none, gets none.
    addresses = {
        "CANDOR_NATS_URL": nats_url,
        "CANDOR_GRPC_ADDRESS": grpc_address,
        "CANDOR_HEALTH_ADDRESS": health_address,
    }
    local.update({name: address for name, address in addresses.items() if address})
    local.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    if local.get("CANDOR_MATCHER_BACKEND") == "server":
        for name in [name for name in local if name.startswith("CANDOR_QDRANT_")]:
            del local[name]
        local.update(CANDOR_MATCHER_BACKEND="edge", CANDOR_MATCHER_DATA_DIR=str(data / "gallery"))
    if local.get("CANDOR_AUDIT_BACKEND") == "postgres" and not postgres:
        for name in [name for name in local if name.startswith("CANDOR_AUDIT_POSTGRES_")]:
            del local[name]
        local.update(CANDOR_AUDIT_BACKEND="sqlite", CANDOR_AUDIT_DB=str(data / "audit" / "audit.db"))
    return local
