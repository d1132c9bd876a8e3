"""Runs Candor in its production shape in containers and breaks it on purpose while work flows.

`make test-scale` runs this from the repository root, with it on PYTHONPATH. Steps, each timed:

1. the images, built as `make test-containers` builds them (scripts/test_containers.py; a build
   whose layers are cached takes seconds), kept for the next run;
2. compose.yaml + compose.e2e.yaml + compose.containers.yaml + compose.scale.yaml, up with two
   gateways, detectors, embedders and audit replicas over a three-node NATS cluster, on an internal
   network, with secrets made for this run only;
3. the workload (tests/scale/workload.py) in the e2e runner's image on that network: a bulk import
   of varied crops of the sample photos, searches and two blind reviewers, every call logged;
4. meanwhile the faults, one after another (FAULTS): kill -9 of a NATS node, a gateway, a detector,
   an embedder and an audit replica (Docker's restart policy brings each back, as an orchestrator
   would), PostgreSQL stopped for 30 s, the matcher paused for 30 s;
5. the verdict: nothing lost or doubled (import items, searches, reviews), the audit chain whole,
   no wrong answer, every failed search UNAVAILABLE, every JetStream stream on three nodes; the
   table of faults (error rate and p99 during and after each, time to recover) is printed and
   written to the --report file;
6. everything taken down, volumes included.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from candor_cli.stack import REVIEW
from scripts.test_containers import (
    CANDOR_UID,
    COMPOSE_DIR,
    ROOT,
    build_images,
    compose_environment,
    docker_engine,
    docker_env,
    image_names,
    remove_service_images,
    run,
    step,
)
from tests.scale.faults import Fault, Op, fault_table, markdown, read_ops, window

COMPOSE_FILES = ("compose.yaml", "compose.e2e.yaml", "compose.containers.yaml", "compose.scale.yaml")
PROJECT = "candor-scale-test"
REPLICATED = ("gateway", "detector", "embedder", "audit")
UP_TIMEOUT_S = 600
#: Seconds after the workload starts at which each fault begins, and how long a stop or pause lasts.
FAULTS: tuple[tuple[float, str, str, float], ...] = (
    (25, "kill", "nats-2", 0),
    (60, "kill", "gateway", 0),
    (95, "kill", "detector", 0),
    (130, "kill", "embedder", 0),
    (165, "kill", "audit", 0),
    (200, "stop", "postgres", 30),
    (260, "pause", "matcher", 30),
)
WORKLOAD_S = 330
PHOTOS = 600
#: The workload's import may take this long after its searches end (the matcher was paused last).
SETTLE_S = 240
BACK_TIMEOUT_S = 180


@dataclass
class Stack:
    """docker-compose over the scale-out files, for one run."""

    command: list[str]
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        """One docker-compose command; its output captured."""
        done = subprocess.run([*self.command, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode:
            raise SystemExit(
                f"test-scale: docker-compose {' '.join(args[:2])} exited {done.returncode}: {done.stderr[-2000:]}"
            )
        return done

    def container(self, service: str) -> str:
        """The id of the service's first container (its replica 1)."""
        ids = self("ps", "-q", service).stdout.split()
        if not ids:
            raise SystemExit(f"test-scale: no container runs {service}")
        named = {cid: docker(["inspect", "-f", "{{.Name}}", cid], self.env).strip() for cid in ids}
        return sorted(ids, key=lambda cid: named[cid])[0]


def docker(args: list[str], env: dict[str, str], timeout: float = 60) -> str:
    """One docker command's output; a failure stops the run."""
    done = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise SystemExit(f"test-scale: docker {' '.join(args[:2])} exited {done.returncode}: {done.stderr[-1000:]}")
    return done.stdout


def state(container: str, env: dict[str, str]) -> tuple[str, str, str]:
    """A container's (status, health, start time)."""
    shown = docker(
        [
            "inspect",
            "-f",
            "{{.State.Status}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}|{{.State.StartedAt}}",
            container,
        ],
        env,
    )
    status, health, started = shown.strip().split("|")
    return status, health, started


def wait_back(container: str, env: dict[str, str], since: str) -> float:
    """Waits until the container was restarted after ``since`` (its start time then) and is healthy
    (running, where it has no health check); returns when that was."""
    deadline = time.time() + BACK_TIMEOUT_S
    while time.time() < deadline:
        status, health, started = state(container, env)
        if started != since and status == "running" and health in ("healthy", ""):
            return time.time()
        time.sleep(0.5)
    raise SystemExit(f"test-scale: {container} did not come back within {BACK_TIMEOUT_S} s")


def inject(stack: Stack, action: str, service: str, hold_s: float) -> Fault:
    """Breaks one part and waits until it is back; the fault's name, start and restoration."""
    container = stack.container(service)
    _, _, since = state(container, stack.env)
    start = time.time()
    if action == "kill":
        pid = docker(["inspect", "-f", "{{.State.Pid}}", container], stack.env).strip()
        # The process itself, from the host, as the kernel's OOM killer or a crash would end it:
        # the container exits 137 and its restart policy brings it back.
        os.kill(int(pid), 9)
        return Fault(
            f"kill -9 {service} (1 of {2 if service in REPLICATED else 3 if service.startswith('nats') else 1})",
            start,
            wait_back(container, stack.env, since),
        )
    if action == "stop":
        docker(["stop", "--time", "10", container], stack.env)
        time.sleep(max(0.0, start + hold_s - time.time()))
        docker(["start", container], stack.env)
        return Fault(f"{service} stopped {hold_s:.0f} s", start, wait_back(container, stack.env, since))
    docker(["pause", container], stack.env)
    time.sleep(hold_s)
    docker(["unpause", container], stack.env)
    return Fault(f"{service} paused {hold_s:.0f} s", start, time.time())


def stream_replicas(stack: Stack) -> dict[str, int]:
    """Every JetStream stream of the cluster (key-value and object stores included) and its replicas."""
    url = "http://127.0.0.1:8222/jsz?accounts=true&streams=true&config=true"
    answer = json.loads(stack("exec", "-T", "nats", "wget", "-q", "-O", "-", url).stdout)
    return {
        stream["name"]: stream["config"]["num_replicas"]
        for account in answer.get("account_details", [])
        for stream in account.get("stream_detail", [])
    }


def verdict(checks: dict[str, Any], ops: list[Op], replicas: dict[str, int]) -> list[str]:
    """What the run broke: empty when nothing."""
    problems = []
    for part in ("import", "searches", "reviews"):
        for count in (
            "lost",
            "doubled",
            "doubled_results",
            "doubled_enrolments",
            "enrolled_not_recorded",
            "wrong_answers",
        ):
            if checks[part].get(count):
                problems.append(f"{part}: {checks[part][count]} {count.replace('_', ' ')}")
    if not checks["chain"]["ok"]:
        problems.append(f"the audit chain does not verify: {checks['chain']['problem']}")
    if not checks["searches"]["ok"] or not checks["reviews"]["ok"]:
        problems.append("the workload completed no search or no review")
    if checks["import"]["results"] < checks["import"]["photos"]:
        problems.append("the import did not finish")
    bad = sorted({f"{op.kind} {op.code}" for op in ops if op.code not in ("OK", "UNAVAILABLE") and op.kind == "search"})
    if bad:
        problems.append(f"searches failed otherwise than UNAVAILABLE: {', '.join(bad)}")
    short = {name: count for name, count in replicas.items() if count != 3}
    if short or not replicas:
        problems.append(f"streams not on three nodes: {short or 'none listed'}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Builds, runs, breaks and judges; returns 0 when nothing was lost, doubled or wrong."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=ROOT / ".cache" / "test-scale" / "report.md")
    parser.add_argument("--photos", type=int, default=PHOTOS)
    parser.add_argument(
        "--throughput",
        action="store_true",
        help="instead of the faults: the same import, alone and unpaced, with one and with two detectors and embedders",
    )
    parser.add_argument("--keep-images", action="store_true", help="leave the built images in the engine")
    args = parser.parse_args(argv)
    version, base, infrastructure = image_names()
    work = Path(tempfile.mkdtemp(prefix="candor-scale-"))
    env = docker_env()
    started = time.monotonic()
    try:
        with docker_engine(env, work / "dockerd.log"):
            build_images(version, base, infrastructure, env)
            if args.throughput:
                status = run_throughput(work, base, version, infrastructure, env, args)
            else:
                status = run_scale(work, base, version, infrastructure, env, args)
            if not args.keep_images:
                remove_service_images(version, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    step(f"finished in {time.monotonic() - started:.0f} s with status {status}")
    return status


def make_stack(work: Path, base: str, version: str, infrastructure: dict[str, str], env: dict[str, str]) -> Stack:
    """The run's compose project, with secrets made for it (in ``work``)."""
    compose_env = compose_environment(work, base, version, infrastructure, env)
    files = [arg for name in COMPOSE_FILES for arg in ("--file", str(COMPOSE_DIR / name))]
    return Stack(["docker-compose", "--compatibility", "--project-name", PROJECT, *files], compose_env)


def fresh_out(work: Path, name: str) -> Path:
    """An empty folder the workload's container (uid CANDOR_UID) writes into."""
    out = work / name
    out.mkdir()
    os.chown(out, CANDOR_UID, CANDOR_UID)
    return out


def workload_command(stack: Stack, out: Path, *args: str) -> list[str]:
    """The workload in the e2e runner's image, on the run's network, writing into ``out``."""
    volume = f"{out}:/out"
    return [
        *stack.command,
        "run",
        "--rm",
        "--no-deps",
        "--volume",
        volume,
        "e2e",
        "python",
        "-m",
        "tests.scale.workload",
        "--out",
        "/out",
        *args,
    ]


def run_scale(
    work: Path, base: str, version: str, infrastructure: dict[str, str], env: dict[str, str], args: argparse.Namespace
) -> int:
    """Brings the topology up, runs the workload with the faults, judges; always takes it down."""
    stack = make_stack(work, base, version, infrastructure, env)
    compose_env = stack.env
    out = fresh_out(work, "out")
    scale = [arg for name in REPLICATED for arg in ("--scale", f"{name}=2")]
    # A run stopped half-way leaves its volumes, with another run's secrets: start clean.
    stack("down", "--volumes", "--remove-orphans", check=False, timeout=300)
    try:
        step(
            "compose up: three NATS nodes, two gateways, detectors, embedders and audit replicas, the matcher, the desk"
        )
        run(
            [*stack.command, "up", "--detach", "--no-build", *scale, "nats-2", "nats-3", "gateway", REVIEW],
            timeout=UP_TIMEOUT_S,
            env=compose_env,
        )
        step("the workload: an import, searches and reviews at once; the faults meanwhile")
        driver = subprocess.Popen(
            workload_command(
                stack, out, "--seconds", str(WORKLOAD_S), "--photos", str(args.photos), "--settle", str(SETTLE_S)
            ),
            env=compose_env,
            stdout=(work / "workload.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        faults = schedule(stack, out, driver.poll)
        driver.wait(timeout=WORKLOAD_S + SETTLE_S + 300)
        log = (work / "workload.log").read_text()
        if driver.returncode or not (out / "checks.json").exists():
            sys.stdout.write(log[-8000:])
            step(f"FAILED: the workload exited {driver.returncode}")
            return 1
        return judge(stack, out, faults, args.report)
    finally:
        # What the run leaves for a person to read, beside the report: the calls and the containers' logs.
        args.report.parent.mkdir(parents=True, exist_ok=True)
        for kept in (out / "ops.jsonl", out / "checks.json", work / "workload.log"):
            if kept.exists():
                shutil.copyfile(kept, args.report.parent / kept.name)
        # Every line: a failure's cause is usually minutes before the end.
        logs = stack("logs", "--no-color", "--timestamps", check=False, timeout=300).stdout
        (args.report.parent / "containers.log").write_text(logs)
        stack("down", "--volumes", "--remove-orphans", check=False, timeout=300)


def cpu_seconds(container: str) -> float:
    """CPU seconds a container has used, from its cgroup (v1, or v2 under systemd)."""
    full = docker(["inspect", "-f", "{{.Id}}", container], os.environ.copy()).strip()
    v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{full}/cpuacct.usage")
    if v1.exists():
        return int(v1.read_text()) / 1e9
    v2 = Path(f"/sys/fs/cgroup/system.slice/docker-{full}.scope/cpu.stat")
    usage = dict(line.split() for line in v2.read_text().splitlines())
    return int(usage["usage_usec"]) / 1e6


def containers_cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds of every container of the run, by compose name (service_replica)."""
    ids = stack("ps", "-q").stdout.split()
    return {
        docker(["inspect", "-f", "{{.Name}}", cid], stack.env).strip().removeprefix(f"/{PROJECT}_"): cpu_seconds(cid)
        for cid in ids
    }


def run_throughput(
    work: Path, base: str, version: str, infrastructure: dict[str, str], env: dict[str, str], args: argparse.Namespace
) -> int:
    """The import alone with one, then two, detectors and embedders; prints photos/s and each
    process's CPU milliseconds a photo."""
    stack = make_stack(work, base, version, infrastructure, env)
    lines = [
        "| detectors + embedders | photos | seconds | photos/s | CPU ms a photo, by process |",
        "|---|---|---|---|---|",
    ]
    rates = []
    for replicas in (1, 2):
        out = fresh_out(work, f"out-{replicas}")
        stack("down", "--volumes", "--remove-orphans", check=False, timeout=300)
        scale = [
            "--scale",
            "gateway=2",
            "--scale",
            "audit=2",
            "--scale",
            f"detector={replicas}",
            "--scale",
            f"embedder={replicas}",
        ]
        try:
            step(f"compose up with {replicas} detector(s) and embedder(s)")
            up = [*stack.command, "up", "--detach", "--no-build", *scale, "nats-2", "nats-3", "gateway", REVIEW]
            run(up, timeout=UP_TIMEOUT_S, env=stack.env)
            before = containers_cpu(stack)
            command = workload_command(
                stack, out, "--import-only", "--photos", str(args.photos), "--seconds", "600", "--settle", "600"
            )
            done = subprocess.run(command, env=stack.env, capture_output=True, text=True, timeout=1500)
            if done.returncode:
                sys.stdout.write(done.stdout[-6000:] + done.stderr[-3000:])
                return 1
            after = containers_cpu(stack)
        finally:
            stack("down", "--volumes", "--remove-orphans", check=False, timeout=300)
        checks = json.loads((out / "checks.json").read_text())
        seconds = checks["import"]["seconds"]
        rates.append(args.photos / seconds)
        by_process: dict[str, float] = {}
        for name, used in after.items():
            service = name.rsplit("_", 1)[0]
            by_process[service] = by_process.get(service, 0.0) + used - before.get(name, 0.0)
        busiest = sorted(by_process.items(), key=lambda item: -item[1])[:7]
        shown = ", ".join(f"{name} {1000 * used / args.photos:.1f}" for name, used in busiest)
        lines.append(f"| {replicas} | {args.photos} | {seconds} | {rates[-1]:.2f} | {shown} |")
        lost = checks["import"]["lost"] + checks["import"]["doubled_results"]
        if lost:
            step(f"FAILED: {lost} import items lost or doubled")
            return 1
    lines.append(f"\nTwo / one: {rates[1] / rates[0]:.2f}; load average at the end {os.getloadavg()[0]:.2f}")
    report = args.report.with_name("throughput.md")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return 0


def schedule(stack: Stack, out: Path, exited: Callable[[], int | None]) -> list[Fault]:
    """Injects FAULTS at their times after the workload starts; returns what was done."""
    deadline = time.time() + 300
    while not (out / "started").exists():
        if exited() is not None or time.time() > deadline:
            return []
        time.sleep(0.5)
    began = float((out / "started").read_text())
    faults = []
    for offset, action, service, hold_s in FAULTS:
        time.sleep(max(0.0, began + offset - time.time()))
        fault = inject(stack, action, service, hold_s)
        step(f"  {fault.name}: back after {fault.restored - fault.start:.1f} s")
        faults.append(fault)
    return faults


def judge(stack: Stack, out: Path, faults: list[Fault], report: Path) -> int:
    """Prints and writes the table and the checks; 0 when nothing was lost, doubled or wrong."""
    checks = json.loads((out / "checks.json").read_text())
    ops = read_ops(out / "ops.jsonl")
    replicas = stream_replicas(stack)
    began = float((out / "started").read_text())
    searches = [op for op in ops if op.kind == "search"]
    end = max(op.end for op in searches)
    first = faults[0].start if faults else end
    table = markdown(fault_table(ops, faults, end), window(searches, began, first))
    calls = {kind: sum(1 for op in ops if op.kind == kind) for kind in ("search", "import.submit", "review.submit")}
    lines = [
        f"Streams and their replicas: {json.dumps(replicas, sort_keys=True)}",
        f"Calls: {json.dumps(calls)}; load average at the end: {os.getloadavg()[0]:.2f}",
        "Checks: " + json.dumps(checks, sort_keys=True),
        "",
        table,
    ]
    problems = verdict(checks, ops, replicas)
    lines += ["", "Verdict: " + ("nothing lost, doubled or wrong" if not problems else "; ".join(problems))]
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    step(f"the report: {report}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
