#!/usr/bin/env bash
# The vswitch demo (see README): as root, a small data centre in network
# namespaces with vswitch running on it, live; without root, the same
# scenario on the in-memory backend. Options: --quick (CI), --memory,
# --engines, --no-engines, --help.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/lib/ensure.sh
# The live demo's tools, and what building the native shim needs (apt-get, as root only).
ensure_tools ip:iproute2 ethtool:ethtool ping:iputils-ping iperf3:iperf3 /usr/bin/python3:python3 make:make gcc:gcc
ensure_node_deps
build
exec node dist/src/cli/demo.js "$@"
