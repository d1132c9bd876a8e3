#!/usr/bin/env bash
# Builds the Debian base image every Candor image can build FROM, with debootstrap: no container
# registry is needed, only a Debian mirror.
#   deploy/images/build-base.sh [TAG]          (default: candor/debian:bookworm)
#   docker build --build-arg BASE_IMAGE=candor/debian:bookworm -f services/gateway/Dockerfile .
# The image holds Debian's python3 (3.11 on bookworm) with venv, passwd and the CA store, with the
# suite's security and point-release updates applied. Certificates in this host's
# /usr/local/share/ca-certificates (an agency's TLS-inspecting proxy, say) go into the image's CA
# store, and pip inside the image trusts that store, so builds reach PyPI as this host does.
# Settings: CANDOR_BASE_SUITE (bookworm), CANDOR_BASE_MIRROR (http://deb.debian.org/debian),
# CANDOR_BASE_SECURITY_MIRROR (http://deb.debian.org/debian-security).
set -euo pipefail

tag=${1:-candor/debian:bookworm}
suite=${CANDOR_BASE_SUITE:-bookworm}
mirror=${CANDOR_BASE_MIRROR:-http://deb.debian.org/debian}
security=${CANDOR_BASE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

command -v debootstrap >/dev/null || { echo "build-base.sh needs debootstrap (Debian package debootstrap)" >&2; exit 2; }
command -v docker >/dev/null || { echo "build-base.sh needs docker (Debian package docker.io)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "build-base.sh needs root (debootstrap and chroot)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs

debootstrap --variant=minbase --include=python3,python3-venv,passwd,ca-certificates \
  "$suite" "$root" "$mirror"

cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
EOF
# Images stay small: no documentation, no apt caches (as Debian's own container images do).
cat >"$root/etc/dpkg/dpkg.cfg.d/candor-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
echo 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/90candor-no-recommends"

local_cas=(/usr/local/share/ca-certificates/*.crt)
if [ -e "${local_cas[0]}" ]; then
  cp "${local_cas[@]}" "$root/usr/local/share/ca-certificates/"
fi
chroot "$root" /bin/sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -q \
  && update-ca-certificates && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin'
# pip's own certificate bundle would not hold the local CAs; Debian's store does.
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
# Docker provides these at run time; the build host's copies must not travel.
rm -f "$root/etc/resolv.conf" "$root/etc/hostname"
: >"$root/etc/hosts"

tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  - "$tag" >/dev/null
echo "built $tag ($suite from $mirror)"
