#!/usr/bin/env bash
# Benchmarks (not tests: timings go to docs/benchmarks.md, never into assertions).
#   ./bench/run.sh foundation     memcpy vs checksum vs software segmentation, heap growth
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure.sh
ensure_node_deps
build
case "${1:-foundation}" in
  foundation) shift || true; exec node dist/bench/foundation.js "$@" ;;
  *) echo "usage: bench/run.sh foundation [--quick] [--no-write]" >&2; exit 2 ;;
esac
