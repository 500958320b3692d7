#!/usr/bin/env bash
# System packages the tests and benchmarks need (Debian): headless chromium + its driver
# for the predictor's browser test, wrk for `make bench-serve`, docker-registry (Docker's
# registry 2.8) for the release push test on loopback (its service is not started: the
# test runs `docker-registry serve` with a config of its own), postgresql (PostgreSQL 15)
# for the team MLflow server test: it runs initdb/pg_ctl from /usr/lib/postgresql/*/bin
# on a port and socket folder of its own, not the package's cluster. Idempotent: installs
# only what is missing, so a second run is a no-op.
set -euo pipefail

packages=(chromium chromium-driver wrk docker-registry postgresql)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "system deps present: ${packages[*]}"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}"
