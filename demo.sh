#!/usr/bin/env bash
# The vswitch demo on its embedded default scenario (see README).
set -euo pipefail
cd "$(dirname "$0")"
. scripts/lib/ensure.sh
ensure_node_deps
build
exec node dist/src/cli/demo.js "$@"
