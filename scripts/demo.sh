#!/usr/bin/env bash
# make demo: the whole flow on embedded defaults (see internal/testing/cmd/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./internal/testing/cmd/demo --bin bin "$@"
