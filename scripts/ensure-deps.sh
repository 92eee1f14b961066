#!/usr/bin/env bash
# Installs what the tests and the demo need when it is missing: Debian's MariaDB server and
# client, protoc, ansible-core and ansible-lint. Needs root (or sudo) for apt-get.
set -euo pipefail

need=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mariadb-dump >/dev/null 2>&1 || need+=(mariadb-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# protoc finds the well-known types (google/protobuf/timestamp.proto) in libprotobuf-dev.
[ -f /usr/include/google/protobuf/timestamp.proto ] || need+=(libprotobuf-dev)
command -v ansible-playbook >/dev/null 2>&1 || need+=(ansible-core)
command -v ansible-lint >/dev/null 2>&1 || need+=(ansible-lint)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "deps: installing ${need[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "deps: need root to install ${need[*]} (apt-get)" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# Package scripts must not start services on the build machine: the tests start their own.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
fi
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "deps: done"
