"""Builds Candor's images without a registry and runs the compose end-to-end suite in containers.

`make test-containers` runs this from the repository root, with it on PYTHONPATH (.ci/run runs
that). Steps, each timed:

1. a Docker engine: the running one, or Debian's dockerd started here and stopped at the end;
2. the Debian base image, made with debootstrap (deploy/images/build-base.sh), unless
   CANDOR_BASE_IMAGE names one already there;
3. nats-server, PostgreSQL and Prometheus images from Debian's packages (deploy/images), the five
   service images and the e2e runner, all FROM that base (the BASE_IMAGE build argument);
4. compose.yaml + compose.e2e.yaml + compose.containers.yaml: the stack up, on an internal network,
   with secrets made for this run only, then the e2e runner; its exit status is the run's;
5. the stand-in trace sink's log must show one trace that crossed the five services, and the
   stack's Prometheus (Debian's package) must have scraped all five and the review desk, counted
   the searches and the desk's requests, and loaded the alert rules;
6. everything is taken down, volumes included.

Builds use the host's network (for PyPI and the Debian mirror); the containers of the run reach only
each other. Stops by itself: every step has a time limit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from candor_cli.deploy_secrets import init_secrets
from candor_cli.stack import REVIEW, SERVICES
from tests.deploy.test_monitoring import alert_rules
from tests.e2e.otlp_sink import traces_in_log

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_DIR = ROOT / "deploy" / "compose"
IMAGES_DIR = ROOT / "deploy" / "images"
COMPOSE_FILES = ("compose.yaml", "compose.e2e.yaml", "compose.containers.yaml")
#: The uid the Candor images run as (their Dockerfiles' USER); the e2e runner reads the token key.
CANDOR_UID = 10001
PROJECT = "candor-containers-test"
BUILD_TIMEOUT_S = 1200
#: Every image these scripts build carries this label, so that a rebuild's superseded image (left
#: untagged: about 1.2-1.6 GB each, nine a run) is pruned, and nobody else's image is touched.
BUILD_LABEL = "org.candor.built-by=candor-test-scripts"
#: Where the earlier stages of multi-stage builds are tagged (``build_commands``).
STAGE_REPOSITORY = "candor/build-stage"
#: Free space the Docker engine's disk needs before the images are built and a stack runs on them.
IMAGES_NEED_GB = 8
RUN_TIMEOUT_S = 900
TRACE_WAIT_S = 30
PROMETHEUS_WAIT_S = 60


#: The make target running (test-containers, or test-bare, which uses these helpers too).
TARGET = Path(sys.argv[0]).stem.replace("_", "-")


def step(message: str) -> None:
    """Prints a progress line, timestamped, named by the make target running."""
    print(f"[{TARGET} {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(command: Sequence[str], *, timeout: float, env: dict[str, str] | None = None, quiet: bool = False) -> None:
    """Runs a command to completion; its output goes to ours unless ``quiet``, where only a failure shows it."""
    started = time.monotonic()
    if quiet:
        result = subprocess.run(command, env=env, timeout=timeout, capture_output=True, text=True)
        if result.returncode:
            sys.stdout.write(result.stdout[-20000:] + result.stderr[-20000:])
    else:
        result = subprocess.run(command, env=env, timeout=timeout)
    if result.returncode:
        raise SystemExit(f"{TARGET}: {' '.join(command[:3])} … exited {result.returncode}")
    step(f"  done in {time.monotonic() - started:.0f} s: {' '.join(command[:2])} {command[-1]}")


def docker_answers(env: dict[str, str]) -> bool:
    """Whether a Docker engine answers the client."""
    return subprocess.run(["docker", "info"], env=env, capture_output=True).returncode == 0


@contextmanager
def docker_engine(env: dict[str, str], log: Path) -> Iterator[None]:
    """A Docker engine for the run: the one already answering, or dockerd started (and stopped) here."""
    if docker_answers(env):
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise SystemExit(f"{TARGET}: no Docker engine answers and dockerd is not installed (Debian docker.io)")
    step(f"starting dockerd (log: {log})")
    with log.open("ab") as output:
        daemon = subprocess.Popen([dockerd], stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not docker_answers(env):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{TARGET}: dockerd did not come up; see {log}")
            time.sleep(0.5)
        yield
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()


def image_exists(image: str, env: dict[str, str]) -> bool:
    """Whether the engine holds ``image``."""
    return subprocess.run(["docker", "image", "inspect", image], env=env, capture_output=True).returncode == 0


def ensure_base_image(base: str, env: dict[str, str]) -> None:
    """The Debian base image every build starts FROM: made with debootstrap unless the engine has it."""
    if not image_exists(base, env):
        step(f"building the Debian base image {base} with debootstrap")
        run(["bash", str(IMAGES_DIR / "build-base.sh"), base], timeout=BUILD_TIMEOUT_S, env=env, quiet=True)


def build_stages(dockerfile: Path) -> list[str]:
    """The named stages (``FROM … AS <name>``) of ``dockerfile`` that come before its last FROM."""
    stages = [line.split() for line in dockerfile.read_text().splitlines() if line.upper().startswith("FROM ")]
    return [words[3] for words in stages[:-1] if len(words) == 4 and words[2].upper() == "AS"]


def build_commands(image: str, dockerfile: Path, context: Path, base: str) -> list[list[str]]:
    """The docker builds that make ``image`` FROM ``base`` (the BASE_IMAGE build argument), with the
    host's network and BUILD_LABEL.

    Each earlier stage is built first and tagged (``candor/build-stage:<dockerfile>-<stage>``): the
    legacy builder puts ``--label`` on the last stage only and leaves an earlier stage's image
    untagged, 1.2-1.3 GB that no prune of labelled images reaches, two a run. Tagged, a stage's image
    stays as the next build's cache, and a rebuild that moves the tag leaves the old one untagged
    *with* the label, for ``prune_superseded_images``."""
    common = ["docker", "build", "--quiet", "--network", "host", "--build-arg", f"BASE_IMAGE={base}"]
    common += ["--label", BUILD_LABEL, "--file", str(dockerfile)]
    name = image.partition("/")[2].partition(":")[0] if dockerfile.name == "Dockerfile" else dockerfile.stem
    stages = [[*common, "--target", stage, "--tag", f"{STAGE_REPOSITORY}:{name}-{stage}", str(context)]
              for stage in build_stages(dockerfile)]  # fmt: skip
    return [*stages, [*common, "--tag", image, str(context)]]


def build(image: str, dockerfile: Path, context: Path, base: str, env: dict[str, str]) -> None:
    """Builds one image (``build_commands``)."""
    step(f"building {image}")
    for command in build_commands(image, dockerfile, context, base):
        run(command, timeout=BUILD_TIMEOUT_S, env=env)


def prune_superseded_images(env: dict[str, str]) -> None:
    """Removes the images an earlier build of these scripts left untagged (a rebuild moves the tag).

    Only dangling images with BUILD_LABEL go: runs on one machine would otherwise pile up nine
    images each, until a later run finds the disk full."""
    result = subprocess.run(
        ["docker", "image", "prune", "--force", "--filter", f"label={BUILD_LABEL}"],
        env=env,
        capture_output=True,
        text=True,
    )
    removed = sum(line.startswith("untagged:") or line.startswith("deleted:") for line in result.stdout.splitlines())
    reclaimed = next((line for line in result.stdout.splitlines() if line.startswith("Total reclaimed")), "")
    if result.returncode == 0 and removed:
        step(f"removed the images earlier builds left untagged ({reclaimed.partition(':')[2].strip()} freed)")


def docker_disk(env: dict[str, str]) -> Path:
    """The folder the Docker engine keeps images and containers in."""
    result = subprocess.run(
        ["docker", "info", "--format", "{{.DockerRootDir}}"], env=env, capture_output=True, text=True
    )
    return Path(result.stdout.strip() or "/var/lib/docker")


def free_space_problem(folder: Path, need_gb: float) -> str | None:
    """What to tell the person running the tests when ``folder``'s disk has under ``need_gb`` free."""
    free_gb = shutil.disk_usage(folder).free / 1e9
    if free_gb >= need_gb:
        return None
    return (
        f"{TARGET}: the disk holding {folder} has {free_gb:.1f} GB free, and this run needs about "
        f"{need_gb:.0f} GB. Free some space (docker image prune removes untagged images; old clones "
        "and .venv folders are large) and run it again."
    )


def require_free_space(env: dict[str, str], need_gb: float) -> None:
    """Stops the run with a clear message, before anything is built, when the engine's disk is short."""
    prune_superseded_images(env)
    problem = free_space_problem(docker_disk(env), need_gb)
    if problem:
        raise SystemExit(problem)


def remove_service_images(version: str, env: dict[str, str]) -> None:
    """Removes the service and e2e runner images a run built (the base and infrastructure images,
    which change seldom, stay for the next run)."""
    removed = [f"candor/{name}:{version}" for name in (*SERVICES, REVIEW, "e2e")]
    subprocess.run(["docker", "image", "rm", *removed], env=env, capture_output=True)


def compose_command(env: dict[str, str]) -> list[str]:
    """docker-compose over the three files, with the memory limits of ``deploy`` applied."""
    files = [arg for name in COMPOSE_FILES for arg in ("--file", str(COMPOSE_DIR / name))]
    return ["docker-compose", "--compatibility", "--project-name", PROJECT, *files]


def image_names() -> tuple[str, str, dict[str, str]]:
    """Candor's image version, the Debian base image, and the infrastructure images by service."""
    version = dotenv_values(COMPOSE_DIR / ".env")["CANDOR_VERSION"] or "0.1.0"
    base = os.environ.get("CANDOR_BASE_IMAGE", "candor/debian:bookworm")
    return version, base, {name: f"candor/{name}-debian:bookworm" for name in ("nats", "postgres", "prometheus")}


def docker_env() -> dict[str, str]:
    """The environment for docker and docker-compose: the legacy builder (BuildKit would need the
    buildx plugin, which Debian's docker.io lacks)."""
    return {**os.environ, "DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "0"}


def build_images(version: str, base: str, infrastructure: dict[str, str], env: dict[str, str]) -> None:
    """The base image if missing, then the infrastructure, service and e2e runner images (cached
    layers make a rebuild of unchanged sources take seconds)."""
    require_free_space(env, IMAGES_NEED_GB)
    ensure_base_image(base, env)
    for name, image in infrastructure.items():
        build(image, IMAGES_DIR / f"{name}.Dockerfile", IMAGES_DIR, base, env)
    for name in (*SERVICES, REVIEW):
        build(f"candor/{name}:{version}", ROOT / "services" / name / "Dockerfile", ROOT, base, env)
    build(f"candor/e2e:{version}", COMPOSE_DIR / "e2e.Dockerfile", ROOT, base, env)


def main(argv: list[str] | None = None) -> int:
    """Builds, runs and checks; returns the e2e runner's exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-images", action="store_true", help="leave the built images in the engine")
    args = parser.parse_args(argv)
    version, base, infrastructure = image_names()
    work = Path(tempfile.mkdtemp(prefix="candor-containers-"))
    env = docker_env()
    started = time.monotonic()
    try:
        with docker_engine(env, work / "dockerd.log"):
            build_images(version, base, infrastructure, env)
            status = run_compose(work, base, version, infrastructure, env)
            if not args.keep_images:
                remove_service_images(version, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    step(f"finished in {time.monotonic() - started:.0f} s with status {status}")
    return status


def compose_environment(
    work: Path, base: str, version: str, infrastructure: dict[str, str], env: dict[str, str]
) -> dict[str, str]:
    """The environment docker-compose runs a stack of this host's images with: secrets made for
    the run in ``work`` (once), and each image the compose files name."""
    secrets = work / "secrets"
    if not secrets.exists():
        init_secrets(secrets)
        os.chown(secrets / "token-signing.pem", CANDOR_UID, CANDOR_UID)
    return {
        **env,
        "SECRETS_DIR": str(secrets),
        "NATS_IMAGE": infrastructure["nats"],
        "POSTGRES_IMAGE": infrastructure["postgres"],
        "PROMETHEUS_IMAGE": infrastructure["prometheus"],
        # Stand-ins (see compose.containers.yaml): no Qdrant server, Collector or Jaeger image here.
        "QDRANT_IMAGE": base,
        "OTEL_COLLECTOR_IMAGE": f"candor/e2e:{version}",
        "JAEGER_IMAGE": base,
    }


def run_compose(work: Path, base: str, version: str, infrastructure: dict[str, str], env: dict[str, str]) -> int:
    """Runs the compose e2e suite in containers and checks the traces; always takes the stack down."""
    compose_env = compose_environment(work, base, version, infrastructure, env)
    compose = compose_command(compose_env)
    try:
        step("compose up: the stack, its review desk and its Prometheus, each once those it depends on are healthy")
        run(
            [*compose, "up", "--detach", "--no-build", "gateway", REVIEW, "prometheus"],
            timeout=RUN_TIMEOUT_S,
            env=compose_env,
        )
        step("compose run: the e2e runner against the stack")
        status = subprocess.run([*compose, "run", "--rm", "e2e"], env=compose_env, timeout=RUN_TIMEOUT_S).returncode
        step(f"the e2e runner exited {status}")
        if status == 0 and not traces_crossed_every_service(compose, compose_env):
            status = 1
        if status == 0 and not prometheus_scraped_every_service(compose, compose_env):
            status = 1
        subprocess.run([*compose, "ps"], env=compose_env)
        if status:
            subprocess.run([*compose, "logs", "--no-color", "--tail", "40"], env=compose_env)
        return status
    finally:
        subprocess.run([*compose, "down", "--volumes", "--remove-orphans"], env=compose_env, capture_output=True)


def prometheus_api(compose: list[str], env: dict[str, str], path: str) -> dict[str, Any]:
    """The data of one call to the stack's Prometheus API, made from inside its container (the
    network is internal); {} when it does not answer."""
    url = f"http://127.0.0.1:9090/api/v1/{path}"
    answer = subprocess.run(
        [*compose, "exec", "-T", "prometheus", "wget", "-q", "-O", "-", url], env=env, capture_output=True, text=True
    )
    if answer.returncode:
        return {}
    data: dict[str, Any] = json.loads(answer.stdout)["data"]
    return data


def prometheus_query(compose: list[str], env: dict[str, str], expression: str) -> list[dict[str, Any]]:
    """An instant query's result vector ([] when Prometheus does not answer)."""
    result: list[dict[str, Any]] = prometheus_api(
        compose, env, f"query?{urllib.parse.urlencode({'query': expression})}"
    ).get("result", [])
    return result


def sum_of(vector: list[dict[str, Any]]) -> float:
    """The value of a one-element result vector from a sum() query; 0 when it is empty."""
    return float(vector[0]["value"][1]) if vector else 0.0


def prometheus_scraped_every_service(compose: list[str], env: dict[str, str]) -> bool:
    """Whether the stack's Prometheus has every service and the review desk up, and counted the
    runner's searches and its requests to the desk (within PROMETHEUS_WAIT_S: it scrapes every 15 s)."""
    expected = {f"candor-{name}": "1" for name in (*SERVICES, REVIEW)}
    searches = 'sum(candor_grpc_server_handled_total{job="candor-gateway", grpc_method=~".*/Search", grpc_code="OK"})'
    pages = 'sum(candor_http_requests_handled_total{job="candor-review"})'
    deadline = time.monotonic() + PROMETHEUS_WAIT_S
    while True:
        up = {series["metric"]["job"]: series["value"][1] for series in prometheus_query(compose, env, "up")}
        searched, served = (sum_of(prometheus_query(compose, env, expression)) for expression in (searches, pages))
        if (up == expected and searched >= 1 and served >= 1) or time.monotonic() > deadline:
            break
        time.sleep(2)
    rules = prometheus_api(compose, env, "rules")
    loaded = sum(len(group["rules"]) for group in rules.get("groups", []))
    step(
        f"Prometheus: up {dict(sorted(up.items()))}; searches counted at the gateway: {searched:g}; "
        f"requests counted at the review desk: {served:g}; alert rules loaded: {loaded}"
    )
    if (
        up != expected
        or searched < 1
        or served < 1
        or loaded != sum(len(group["rules"]) for group in alert_rules()["groups"])
    ):
        step("FAILED: Prometheus did not scrape every service, count the searches and desk requests, or load the rules")
        return False
    return True


def traces_crossed_every_service(compose: list[str], env: dict[str, str]) -> bool:
    """Whether the trace sink saw one trace with spans of all five services (within TRACE_WAIT_S:
    the services export their spans in batches)."""
    expected = {f"candor-{name}" for name in SERVICES}
    deadline = time.monotonic() + TRACE_WAIT_S
    while True:
        log = subprocess.run(
            [*compose, "logs", "--no-color", "otel-collector"], env=env, capture_output=True, text=True
        )
        widest = max(traces_in_log(log.stdout), key=len, default=set())
        if expected <= widest or time.monotonic() > deadline:
            break
        time.sleep(1)
    step(f"the trace sink's widest trace crossed: {', '.join(sorted(widest)) or 'nothing'}")
    if not expected <= widest:
        step(f"FAILED: no trace crossed every service; missing {', '.join(sorted(expected - widest))}")
    return expected <= widest


if __name__ == "__main__":
    sys.exit(main())
