"""``python -m candor_review.healthcheck``: exit 0 when the review desk on this host answers its
health page (over HTTPS when it serves TLS: the certificate is for its service name, not for
127.0.0.1, so only the answer is checked here, never a session)."""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request


def main() -> int:
    """Print the verdict and return the exit code a health check expects."""
    port = os.environ.get("CANDOR_REVIEW_ADDRESS", "127.0.0.1:8443").rpartition(":")[2]
    tls = bool(os.environ.get("CANDOR_REVIEW_TLS_CERT"))
    context = ssl._create_unverified_context() if tls else None
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as reply:
            healthy = reply.status == 200
    except OSError:
        healthy = False
    print("SERVING" if healthy else "NOT SERVING")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
