#!/usr/bin/env bash
# Runs every vswitch test: unit and property tests, golden tests against
# vectors captured from the Linux kernel, and end-to-end tests that drive the
# real kernel in network namespaces (these need root; under CI=true they fail
# instead of skipping when they cannot run).
set -euo pipefail
cd "$(dirname "$0")"
. scripts/lib/ensure.sh
ensure_tools ip:iproute2 ethtool:ethtool /usr/bin/python3:python3 ping:iputils-ping iperf3:iperf3 make:make gcc:gcc tshark:tshark capinfos:wireshark-common
# The tiny QEMU VM of the legacy-NIC and IPsec tests: Debian's kernel and a static busybox.
ensure_packages qemu-system-x86 linux-image-amd64 busybox-static
# Independent IPsec peers for the interop tests (scapy with its crypto backend).
ensure_packages python3-scapy python3-cryptography
ensure_node_deps
build
exec node --test $(find dist/test -name "*.test.js" | sort)
