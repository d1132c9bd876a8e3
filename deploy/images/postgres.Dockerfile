# PostgreSQL from Debian's packages, for running the compose stack where no registry is reachable
# (`make test-containers`). Production takes the upstream image (POSTGRES_IMAGE in deploy/compose/.env).
#   docker build --build-arg BASE_IMAGE=candor/debian:bookworm -f deploy/images/postgres.Dockerfile deploy/images
# postgres-entrypoint.sh keeps the upstream image's contract for what compose sets: POSTGRES_USER,
# POSTGRES_DB, POSTGRES_PASSWORD_FILE, the data in /var/lib/postgresql/data, and pg_isready.
ARG BASE_IMAGE=candor/debian:bookworm
FROM ${BASE_IMAGE}
# Debian's package would make a cluster of its own at install; the entrypoint makes the one used.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-common \
    && sed -i 's/^#\?\s*create_main_cluster.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf \
    && apt-get install -y --no-install-recommends postgresql \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /run/postgresql \
    && chown postgres:postgres /var/lib/postgresql/data /run/postgresql \
    && chmod 700 /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PGDATA=/var/lib/postgresql/data
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
