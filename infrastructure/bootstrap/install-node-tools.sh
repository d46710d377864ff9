#!/usr/bin/env bash
# Installs what the Ansible test nodes need (mmdebstrap base image, systemd-nspawn containers,
# network namespaces, SSH); only what is missing. Idempotent.
# With CI=true a tool that is still missing afterwards is a failure.
set -euo pipefail

NODE_PACKAGES=(
  mmdebstrap:/usr/bin/mmdebstrap
  systemd-container:/usr/bin/systemd-nspawn
  openssh-client:/usr/bin/ssh
  iproute2:/usr/sbin/ip
  debian-archive-keyring:/usr/share/keyrings/debian-archive-keyring.gpg
)

missing=()
for entry in "${NODE_PACKAGES[@]}"; do
  package=${entry%%:*}
  path=${entry#*:}
  [ -e "$path" ] || missing+=("$package")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-node-tools: missing ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    [ "${CI:-}" = "true" ] && exit 1
    exit 0
  fi
  echo "install-node-tools: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # systemd-container's postinst wants systemd running; without an init system it only warns.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

still_missing=()
for entry in "${NODE_PACKAGES[@]}"; do
  path=${entry#*:}
  [ -e "$path" ] || still_missing+=("$path")
done
if [ ${#still_missing[@]} -gt 0 ]; then
  echo "install-node-tools: still missing after install: ${still_missing[*]}" >&2
  [ "${CI:-}" = "true" ] && exit 1
fi
echo "install-node-tools: ok"
