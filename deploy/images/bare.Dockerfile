# A bare Debian 12 machine as a new user has one: the debootstrap base (python3, python3-venv, the
# CA store) with only make and git added. `make test-bare` clones Candor into it and runs
# `make test`, which must install everything else itself (scripts/system-deps.sh, make setup).
ARG BASE_IMAGE=candor/debian:bookworm
FROM ${BASE_IMAGE}
# A fresh machine installs recommended packages and keeps documentation: undo the image's slimming.
# Unpinned as a new user's apt-get would be: the suite's current make and git.
# hadolint ignore=DL3008,DL3015
RUN rm -f /etc/apt/apt.conf.d/90candor-no-recommends /etc/dpkg/dpkg.cfg.d/candor-slim \
    && apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q make git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /root
CMD ["/bin/bash"]
