#!/usr/bin/env bash
# Pods (systemd units) versus podman, side by side in one run: start to running, stop, and host
# memory per running pod. Each iteration starts and stops one podman container and one pod of the
# same busybox image, so both share the machine's load; the medians and the ratios are printed.
#
# Needs root, systemd 252+ installed (it is booted in namespaces by pods/podstest, not as the
# host's PID 1), podman with runc, busybox-static, iproute2.
#
# Usage: e2e/bench/pods.sh [ITERATIONS]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-20}"
go test -run '^$' -bench '^BenchmarkPodsVsPodman$' -benchtime "${n}x" -count 1 ./pods/ |
	grep -v -e '^goos:' -e '^goarch:' -e '^pkg:' -e '^cpu:'
