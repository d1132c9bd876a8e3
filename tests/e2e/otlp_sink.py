"""A trace sink for the compose stack run in containers (`make test-containers`).

STAND-IN for the OpenTelemetry Collector and Jaeger, which have no Debian package and whose images
no registry here can supply. It is a real OTLP/gRPC receiver: the services export their spans to it
exactly as they would to the Collector. It keeps, for each recent trace, the set of services whose
spans carry that trace id, and prints one JSON line whenever a trace gains a service, so the run's
log shows which services met in one trace. Nothing else of a span (not even its name) is kept or
printed.

    python -m tests.e2e.otlp_sink --listen 0.0.0.0:4317
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

#: Traces remembered at most; the oldest is forgotten first.
MAX_TRACES = 10_000


def service_name(spans: trace_pb2.ResourceSpans) -> str:
    """The service.name resource attribute of one batch of spans ('unknown' without one)."""
    for attribute in spans.resource.attributes:
        if attribute.key == "service.name":
            return attribute.value.string_value
    return "unknown"


class TraceSink(trace_service_pb2_grpc.TraceServiceServicer):
    """Receives OTLP trace exports and reports each trace's services as they arrive."""

    def __init__(self, max_traces: int = MAX_TRACES) -> None:
        self._services: OrderedDict[str, set[str]] = OrderedDict()
        self._max_traces = max_traces
        self._lock = threading.Lock()

    def Export(  # noqa: N802 (the gRPC method's name)
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = service_name(resource_spans)
            trace_ids = {span.trace_id.hex() for scope in resource_spans.scope_spans for span in scope.spans}
            self._record(service, trace_ids)
        return trace_service_pb2.ExportTraceServiceResponse()

    def _record(self, service: str, trace_ids: Iterable[str]) -> None:
        with self._lock:
            for trace_id in sorted(trace_ids):
                services = self._services.setdefault(trace_id, set())
                self._services.move_to_end(trace_id)
                if service not in services:
                    services.add(service)
                    line = {"event": "trace_gained_service", "trace_id": trace_id, "service": service}
                    print(json.dumps({**line, "services": sorted(services)}), flush=True)
            while len(self._services) > self._max_traces:
                self._services.popitem(last=False)


def traces_in_log(log: str) -> list[set[str]]:
    """The services of each trace, as the sink's lines in ``log`` last reported them.

    Lines may carry a prefix (docker-compose puts the container's name before each)."""
    services: dict[str, set[str]] = {}
    for line in log.splitlines():
        start = line.find("{")
        try:
            event = json.loads(line[start:]) if start >= 0 else {}
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("event") == "trace_gained_service":
            services[event["trace_id"]] = set(event["services"])
    return list(services.values())


def main(argv: list[str] | None = None) -> None:
    """Serve the sink until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="0.0.0.0:4317", help="host:port for OTLP/gRPC (default %(default)s)")
    args = parser.parse_args(argv)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceSink(), server)
    server.add_insecure_port(args.listen)
    server.start()
    print(json.dumps({"event": "otlp_sink_listening", "address": args.listen}), flush=True)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    stopping.wait()
    server.stop(grace=2).wait()


if __name__ == "__main__":
    main()
