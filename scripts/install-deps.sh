#!/usr/bin/env bash
# Installs pgshift's build and test dependencies from Debian 12, only those missing (idempotent).
set -euo pipefail

packages=(
  build-essential cmake ccache pkg-config git
  libpq-dev libboost1.81-dev libboost-json1.81-dev libyaml-cpp-dev libspdlog-dev
  prometheus-cpp-dev libcli11-dev libsystemd-dev catch2
  postgresql-15 postgresql-client-15 postgresql-contrib curl prometheus bc pgbouncer
  clang libclang-rt-14-dev xxd
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
