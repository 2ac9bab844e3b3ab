#!/usr/bin/env bash
# Benchmarks (not tests: timings go to docs/benchmarks.md, never into assertions).
#   ./bench/run.sh foundation     memcpy vs checksum vs software segmentation, heap growth
#   ./bench/run.sh switch         vswitch vs the wire, the Linux bridge and Open vSwitch (userspace), one run
#                                 [--quick] [--soak] [--no-write] [--no-profile] [--reps N] [--seconds N] [--only id,...]
#                                 [--workers N] [--queues N]
#   ./bench/run.sh scaling        vswitch with 0, 1 and 2 I/O worker threads, the same flows [--reps N] [--seconds N] [--no-write]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure.sh
ensure_node_deps
build
case "${1:-foundation}" in
  foundation) shift || true; exec node dist/bench/foundation.js "$@" ;;
  switch)
    shift
    ensure_tools iperf3:iperf3 ping:iputils-ping ethtool:ethtool ss:iproute2 ovs-vswitchd:openvswitch-switch
    exec node dist/bench/switch.js "$@" ;;
  scaling)
    shift
    ensure_tools iperf3:iperf3 ping:iputils-ping ethtool:ethtool ss:iproute2
    exec node dist/bench/scaling.js "$@" ;;
  *) echo "usage: bench/run.sh foundation [--quick] [--no-write] | switch [--quick] [--soak] [--no-write] | scaling [--reps N] [--no-write]" >&2; exit 2 ;;
esac
