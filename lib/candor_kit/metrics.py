"""Prometheus metrics of one service, served over HTTP at ``/metrics`` (``CANDOR_METRICS_ADDRESS``).

Every service counts its gRPC calls and the NATS requests it answers, by method or subject and
by status code, with their latency; the gateway counts its refusals by policy rule, the internal
services the calls they refuse for want of the service token; the audit service times its appends
and says whether its chain is broken; consumers report their JetStream backlog; the matcher
counts its gallery; the gateway says when its sweeps last ran clean; the review desk counts its
HTTP requests by route and status. Labels name methods, routes, subjects, codes and rules only:
never a user, a case number, a search id, an image or a token.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

#: Latency buckets in seconds, from a cached health check to a search of a large gallery.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

GRPC_HANDLED = Counter(
    "candor_grpc_server_handled",
    "gRPC calls finished, by method and status code",
    ["grpc_method", "grpc_code"],
)
GRPC_SECONDS = Histogram(
    "candor_grpc_server_handling_seconds",
    "time from a gRPC call's arrival to its answer, by method",
    ["grpc_method"],
    buckets=LATENCY_BUCKETS,
)
NATS_HANDLED = Counter(
    "candor_nats_requests_handled",
    "NATS requests answered, by subject and status code",
    ["subject", "code"],
)
NATS_HEDGED = Counter(
    "candor_nats_requests_hedged",
    "NATS requests sent a second time, by subject, after going unanswered for the hedge delay",
    ["subject"],
)
NATS_SECONDS = Histogram(
    "candor_nats_request_handling_seconds",
    "time from a NATS request's arrival to its reply, by subject",
    ["subject"],
    buckets=LATENCY_BUCKETS,
)
HTTP_HANDLED = Counter(
    "candor_http_requests_handled",
    "HTTP requests the review desk answered, by route template, method and status code",
    ["route", "method", "code"],
)
HTTP_SECONDS = Histogram(
    "candor_http_request_handling_seconds",
    "time from an HTTP request's arrival at the review desk to its answer, by route template",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
REFUSALS = Counter(
    "candor_refusals",
    "requests refused by a policy rule (purpose, authorisation, quota, ...), by rule",
    ["rule"],
)
AUDIT_APPEND_SECONDS = Histogram(
    "candor_audit_append_seconds",
    "time to append a fetched batch of events to the audit chain (hash and sign each, one commit)",
    buckets=LATENCY_BUCKETS,
)
AUDIT_OUTBOX_PENDING = Gauge(
    "candor_audit_outbox_pending",
    "audit events a service has written to its own outbox (durable on its disk) and not yet stored "
    "on the audit stream, by service",
    ["source"],
)
AUDIT_CHAIN_BROKEN = Gauge(
    "candor_audit_chain_broken",
    "1 while the audit chain has failed verification (nothing is appended until it is examined), else 0",
)
AUDIT_ALARMS = Counter(
    "candor_audit_alarms_total",
    "things the audit service refused to trust: checkpoints that fail their check or go backwards, "
    "events on the stream missing from the chain",
    ["alarm"],
)
IMPORT_RESULTS_REFUSED = Counter(
    "candor_import_results_refused_total",
    "import results the gateway refused (not a result, naming another photo than their subject, or an "
    "outcome their sender cannot give): a forged result or a broken worker, by the sender their subject names",
    ["source"],
)
IMPORT_ADVISORIES_UNSETTLED = Counter(
    "candor_import_advisories_unsettled_total",
    "announcements of import work whose deliveries ran out that the gateway could not settle, by why: "
    "failed (kept and tried again) or unreadable (dropped: it can never be settled)",
    ["why"],
)
CONSUMER_PENDING = Gauge(
    "candor_jetstream_consumer_pending",
    "messages waiting for a durable JetStream consumer (audit chain writer, import stages), as of its last pull",
    ["consumer"],
)
FEED_EVENTS = Counter(
    "candor_feed_events",
    "lifecycle events the audit service put on the event feed, by kind and outcome "
    "(published, or duplicate: already on the feed, stored once)",
    ["kind", "outcome"],
)
FEED_CONSUMER_PENDING = Gauge(
    "candor_feed_consumer_pending",
    "events on the feed that an integration's durable consumer has not yet been given, read every 15 s",
    ["consumer"],
)
FEED_CONSUMER_UNACKED = Gauge(
    "candor_feed_consumer_unacknowledged",
    "events an integration's durable consumer was given and has not acknowledged, read every 15 s",
    ["consumer"],
)
FEED_FAILING = Gauge(
    "candor_feed_publish_failing",
    "1 while the audit service cannot put the chain's lifecycle records on the event feed (they wait "
    "in the chain and go out in order once it can), else 0",
)
WEBHOOK_DELIVERIES = Counter(
    "candor_webhook_deliveries",
    "webhook deliveries by endpoint and outcome: delivered, retried (to be tried again later) or "
    "dead_lettered (out of attempts, or refused by the endpoint)",
    ["endpoint", "outcome"],
)
GALLERY_RECORDS = Gauge(
    "candor_gallery_records",
    "face records in the gallery, by model, counted every 15 s by the matcher",
    ["model"],
)

SWEEP_LAST_CLEAN = Gauge(
    "candor_gateway_sweep_last_clean_timestamp_seconds",
    "when each of the gateway's sweeps (probes: deleting retained probes whose retention has ended; "
    "imports: settling imports nobody asks about) last ran a round with nothing left unsettled, as Unix "
    "time; the gateway's start until its first such round",
    ["sweep"],
)
SWEEP_INTERVAL = Gauge(
    "candor_gateway_sweep_interval_seconds",
    "how often the gateway sweeps (CANDOR_GATEWAY_RETENTION_SWEEP_S)",
)


class MetricsServer:
    """The ``/metrics`` HTTP listener, on a thread of its own."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._host = host.strip("[]") or "0.0.0.0"  # the operator chose the address
        self._port = int(port)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> int:
        """Bind and serve; returns the bound port (an ephemeral one for port 0)."""
        self._server, self._thread = start_http_server(self._port, self._host)
        self.port = self._server.server_port
        return self.port

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
