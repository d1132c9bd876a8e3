# Prometheus from Debian's package, for running the compose stack where no registry is reachable
# (`make test-containers`). Production takes the upstream image (PROMETHEUS_IMAGE in deploy/compose/.env).
#   docker build --build-arg BASE_IMAGE=candor/debian:bookworm -f deploy/images/prometheus.Dockerfile deploy/images
# As the upstream image: prometheus is the entrypoint, its data lives in /prometheus, and wget is
# there for compose's health probe.
ARG BASE_IMAGE=candor/debian:bookworm
FROM ${BASE_IMAGE}
# Debian's package makes the system user prometheus; it gets a fixed uid here, for USER and volumes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus wget \
    && rm -rf /var/lib/apt/lists/* \
    && groupmod --gid 10003 prometheus \
    && usermod --uid 10003 --gid 10003 prometheus \
    && mkdir -p /prometheus \
    && chown prometheus:prometheus /prometheus
VOLUME ["/prometheus"]
USER 10003:10003
EXPOSE 9090
ENTRYPOINT ["prometheus"]
