#!/usr/bin/env bash
# Installs the Debian packages Candor needs beyond Python and make, so that `make setup` (and so
# `make demo`) and `make test` do all their own set-up on a fresh Debian machine.
#   scripts/system-deps.sh runtime      what Candor itself needs to run (make setup, make demo)
#   scripts/system-deps.sh test         what `make test` needs as well
#   scripts/system-deps.sh containers   what `make test-containers` and `make test-bare` need too
# As root it installs whatever is missing with apt-get; as anyone else it prints the one
# `apt-get install` line that would, and exits 1 so that no test starts without its tools.
set -euo pipefail

profile=${1:-test}
case $profile in
  runtime) target="make setup" ;;
  test) target="make test" ;;
  containers) target="make test-containers" ;;
  *) echo "usage: $0 runtime|test|containers" >&2; exit 2 ;;
esac
# dockerd, debootstrap and ldconfig live in sbin, off a user's PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

missing=()
need() { missing+=("$1"); }

# opencv-python (the OpenCV build insightface requires) loads libGL and GLib when imported.
ldconfig -p | grep -q 'libGL\.so\.1 ' || need libgl1
need_glib=false
ldconfig -p | grep -q 'libgthread-2\.0\.so\.0 ' || need_glib=true
if [ "$profile" != runtime ]; then
  # The TLS tests make self-signed certificates with openssl; the deploy tests check the compose
  # files with docker-compose (kubectl comes from PyPI, in the venv: Debian 12 has no kubectl).
  command -v openssl >/dev/null || need openssl
  command -v docker-compose >/dev/null || need docker-compose
  # The monitoring tests check the alert rules with promtool and scrape the stack with a real
  # Prometheus (Debian package prometheus has both).
  { command -v prometheus >/dev/null && command -v promtool >/dev/null; } || need prometheus
  # The review desk's browser tests drive Debian's Chromium with Playwright and run axe-core, which
  # make test installs from npm's registry.
  command -v chromium >/dev/null || need chromium
  command -v npm >/dev/null || need npm
  # The audit tests start their own PostgreSQL server from Debian's server binaries.
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need postgresql
  # The integration guide's Go example builds with Debian's Go and its gRPC, protobuf and NATS
  # libraries (GOPATH mode: no Go module proxy is reachable).
  command -v go >/dev/null || need golang-go
  [ -d /usr/share/gocode/src/google.golang.org/grpc ] || need golang-google-grpc-dev
  [ -d /usr/share/gocode/src/google.golang.org/protobuf ] || need golang-google-protobuf-dev
  [ -d /usr/share/gocode/src/github.com/nats-io/nats.go ] || need golang-github-nats-io-go-nats-dev
fi
if [ "$profile" = containers ]; then
  # Images are built without a registry from a debootstrap base and run with Debian's dockerd.
  command -v dockerd >/dev/null || need docker.io
  command -v debootstrap >/dev/null || need debootstrap
fi

if ((${#missing[@]} == 0)) && ! $need_glib; then
  exit 0
fi

glib_package() {
  # Debian 13 renamed the package (64-bit time_t); Debian 12 keeps the old name.
  if apt-cache show libglib2.0-0t64 >/dev/null 2>&1; then echo libglib2.0-0t64; else echo libglib2.0-0; fi
}

if [ "$(id -u)" != 0 ]; then
  $need_glib && missing+=("$(glib_package)")
  echo "$target needs Debian packages this machine lacks. Install them, then run $target again:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "installing Debian packages $target needs: ${missing[*]}$($need_glib && echo ' (and GLib)')"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
$need_glib && missing+=("$(glib_package)")
apt-get install -y -q "${missing[@]}"
