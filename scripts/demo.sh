#!/usr/bin/env bash
# make demo: the whole flow on embedded defaults (see examples/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./examples/demo --bin bin "$@"
