#!/usr/bin/env bash
# Installs pgshift's build and test dependencies from Debian 12, only those missing (idempotent).
set -euo pipefail

packages=(
  build-essential cmake ccache pkg-config git
  libpq-dev libboost1.81-dev libboost-json1.81-dev libyaml-cpp-dev libspdlog-dev
  prometheus-cpp-dev libcli11-dev libsystemd-dev catch2
  postgresql-15 postgresql-client-15 postgresql-contrib curl prometheus bc pgbouncer
  clang libclang-rt-14-dev xxd
  # schema: copy of a table of an extension's type (PostGIS geometry, GiST index): integration test
  postgresql-15-postgis-3
  # deploy tests: the Debian package (tests/deploy/package.sh) and the Kubernetes renderer
  lintian python3-yaml
)
# The Kubernetes validator runs on Node.js; a machine that already has node (and its npm, e.g.
# from NodeSource) keeps it, others get Debian's.
if ! command -v npm >/dev/null 2>&1; then packages+=(nodejs npm); fi

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

# npm packages of the Kubernetes manifest validator (the API schemas, offline at test time):
# installed once from the lock file into tests/deploy/kubernetes/node_modules.
k8s=$(cd "$(dirname "$0")/.." && pwd)/tests/deploy/kubernetes
if [ ! -d "$k8s/node_modules/kubernetes-models" ] || [ "$k8s/package-lock.json" -nt "$k8s/node_modules/.package-lock.json" ]; then
  echo "installing the npm packages of $k8s"
  npm ci --prefix "$k8s" --no-audit --no-fund --loglevel=error >/dev/null
fi
