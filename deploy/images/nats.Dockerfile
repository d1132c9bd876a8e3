# nats-server from Debian's package, for running the compose stack where no registry is reachable
# (`make test-containers`). Production takes the upstream image (NATS_IMAGE in deploy/compose/.env).
#   docker build --build-arg BASE_IMAGE=candor/debian:bookworm -f deploy/images/nats.Dockerfile deploy/images
# The image answers as the upstream one does: nats-server is the entrypoint, JetStream keeps its
# files under /data, and wget is there for compose's health probe of :8222/healthz.
ARG BASE_IMAGE=candor/debian:bookworm
FROM ${BASE_IMAGE}
# Debian's package makes the system user nats; it gets a fixed uid here, for USER and volumes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nats-server wget \
    && rm -rf /var/lib/apt/lists/* \
    && groupmod --gid 10002 nats \
    && usermod --uid 10002 --gid 10002 nats \
    && mkdir -p /data \
    && chown nats:nats /data
VOLUME ["/data"]
USER 10002:10002
EXPOSE 4222 8222
ENTRYPOINT ["nats-server"]
