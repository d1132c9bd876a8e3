"""A real Prometheus (Debian's package) scrapes the local process stack's five services and its
review desk, loads Candor's alert rules, sees a search and a desk request, and fires the alert for
calls made without the service token.

Every listener is on 127.0.0.1; Prometheus stops with the module.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml

from candor.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from candor_cli import LocalStack
from candor_cli.processes import free_port
from candor_cli.stack import REVIEW, SERVICES, metrics_key
from tests.deploy.test_monitoring import alert_rules, write_rule_file
from tests.e2e.test_stack_cli import candor, searching

pytestmark = pytest.mark.e2e

SEARCH = "candor.gateway.v1.GatewayService/Search"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, samples: Path) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path_factory.mktemp("scraped"))
    stack.up()
    candor(stack, "enroll", str(samples / "obama.jpg"), "--subject", "obama")
    yield stack
    stack.down()


@pytest.fixture(scope="module")
def prometheus(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a Prometheus scraping every service each second, with the alert rules loaded."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: install Debian's prometheus package (.ci/run does)"
    state = stack.state()
    assert state is not None
    folder = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(write_rule_file(folder))],
        "scrape_configs": [
            {"job_name": f"candor-{name}", "static_configs": [{"targets": [state.addresses[metrics_key(name)]]}]}
            for name in (*SERVICES, REVIEW)
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    with (folder / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={url.removeprefix('http://')}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        eventually(lambda: _get(f"{url}/-/ready") is not None, what="Prometheus ready", timeout_s=60)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read()
    except OSError:
        return None
    return json.loads(body) if body.startswith(b"{") else body


def query(url: str, expression: str) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    answer = _get(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expression})}")
    assert answer is not None and answer["status"] == "success", answer
    return answer["data"]["result"]


def value(url: str, expression: str) -> float:
    """The single value of an instant query (0 when it has no series)."""
    result = query(url, expression)
    return float(result[0]["value"][1]) if result else 0.0


def eventually(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"not in {timeout_s:g} s: {what}")


def test_prometheus_scrapes_all_five_services_and_the_review_desk(prometheus: str) -> None:
    def all_up() -> bool:
        return {r["metric"]["job"]: r["value"][1] for r in query(prometheus, "up")} == {
            f"candor-{name}": "1" for name in (*SERVICES, REVIEW)
        }

    eventually(all_up, "up == 1 for every service and the desk")


def test_a_desk_request_is_counted_under_its_route_never_its_path(prometheus: str, stack: LocalStack) -> None:
    state = stack.state()
    assert state is not None
    search_id = str(uuid.uuid4())
    answer = httpx.get(f"http://{state.addresses[REVIEW]}/searches/{search_id}", follow_redirects=False, timeout=10)
    assert answer.status_code == 303  # not signed in: to the sign-in page
    counted = (
        'candor_http_requests_handled_total{job="candor-review", '
        'route="/searches/{search_id:str}", method="GET", code="303"}'
    )
    eventually(lambda: value(prometheus, counted) >= 1, "the desk's request counted under its route")
    timed = 'candor_http_request_handling_seconds_count{job="candor-review", route="/searches/{search_id:str}"}'
    assert value(prometheus, timed) >= 1
    labels = [series["metric"] for series in query(prometheus, '{job="candor-review"}')]
    assert labels and not any(search_id in label for metric in labels for label in metric.values())


def test_a_search_shows_in_every_services_metrics(prometheus: str, stack: LocalStack, samples: Path) -> None:
    searched = f'candor_grpc_server_handled_total{{job="candor-gateway", grpc_method="{SEARCH}", grpc_code="OK"}}'
    before = value(prometheus, searched)
    candor(stack, *searching(samples / "obama2.jpg", "PROM-1/2026"))
    eventually(lambda: value(prometheus, searched) == before + 1, "the gateway's search counted")
    for job, subject in (
        ("candor-detector", "candor.detector.v1.detect"),
        ("candor-matcher", "candor.matcher.v1.search"),
    ):
        expression = f'sum(candor_nats_requests_handled_total{{job="{job}", subject=~"{subject}.*", code="OK"}})'
        # Each target is scraped on its own clock: the gateway's count may arrive first.
        eventually(lambda expression=expression: value(prometheus, expression) >= 1, expression)
    eventually(lambda: value(prometheus, 'candor_audit_append_seconds_count{job="candor-audit"}') > 0, "appends timed")
    eventually(lambda: value(prometheus, 'sum(candor_gallery_records{job="candor-matcher"})') >= 1, "gallery counted")
    # The search's own latency (the first call of a series has no rate yet: sum over count).
    timed = f'{{job="candor-gateway", grpc_method="{SEARCH}"}}'
    mean = f"candor_grpc_server_handling_seconds_sum{timed} / candor_grpc_server_handling_seconds_count{timed}"
    eventually(lambda: 0 < value(prometheus, mean) < 120, "the search's latency")
    pending = 'candor_jetstream_consumer_pending{job="candor-audit", consumer="audit-chain-writer"}'
    eventually(lambda: bool(query(prometheus, pending)), "the audit backlog gauge scraped")


def test_the_alert_rules_load_and_the_probing_alert_fires_on_calls_without_the_service_token(
    prometheus: str, stack: LocalStack
) -> None:
    groups = _get(f"{prometheus}/api/v1/rules")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == sum(len(group["rules"]) for group in alert_rules()["groups"])
    assert all(rule["health"] == "ok" for rule in rules), rules
    firing = [a for a in _get(f"{prometheus}/api/v1/alerts")["data"]["alerts"] if a["state"] == "firing"]
    assert firing == [], "a healthy stack fires no alert"

    state = stack.state()
    assert state is not None
    with grpc.insecure_channel(state.addresses["embedder"]) as channel, pytest.raises(grpc.RpcError) as refused:
        embedder_pb2_grpc.EmbedderServiceStub(channel).GetModel(embedder_pb2.GetModelRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    def probing_alert_fires() -> bool:
        alerts = _get(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
        return any(
            a["labels"]["alertname"] == "CandorInternalApiProbed"
            and a["labels"]["job"] == "candor-embedder"
            and a["state"] == "firing"
            for a in alerts
        )

    eventually(probing_alert_fires, "CandorInternalApiProbed firing for the embedder")
