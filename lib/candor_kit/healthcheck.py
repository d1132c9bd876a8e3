"""``python -m candor_kit.healthcheck [HOST:PORT]``: exit 0 when a gRPC health service says SERVING.

Container health checks run this against the service's plaintext health-only listener
(``CANDOR_HEALTH_ADDRESS``), so it needs no certificate. With no argument it checks
``127.0.0.1`` on the port of ``CANDOR_HEALTH_ADDRESS``.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, timeout_s: float = 3.0) -> bool:
    """Whether the health service at ``address`` reports the server SERVING."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main(argv: list[str] | None = None) -> int:
    """Print the verdict and return the exit code a health check expects."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        address = args[0]
    else:
        port = os.environ.get("CANDOR_HEALTH_ADDRESS", "").rpartition(":")[2]
        if not port.isdigit():
            print("usage: python -m candor_kit.healthcheck HOST:PORT (or set CANDOR_HEALTH_ADDRESS)", file=sys.stderr)
            return 2
        address = f"127.0.0.1:{port}"
    serving = check(address)
    print("SERVING" if serving else "NOT SERVING")
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
