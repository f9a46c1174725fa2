#!/usr/bin/env bash
# onionpod with many apps on one box (issue 14): e2e/scale's BenchmarkScale brings up a lab of its
# own (a real systemd as the box's PID 1, a simulated IPv6 LAN, real CNI plugins, the built-in DNS
# server, onionpod's managed tor offline: DisableNetwork 1), grows it to 10, 100 and 1000 apps
# (busybox httpd pods of one image, each with an onion service and a DNS name) and prints at each
# size the daemon's and tor's memory, a reconcile pass with nothing to do and with one change, a
# reboot to every app running again, expose of one more app and its rm, ls and status, the
# machine's load beside each figure, then a table of every figure with its slope per app. About
# 15 minutes on 2 cores (the reboot with 1000 apps loads the machine for two of them).
#
# Needs root and what `bash .ci/install-deps` installs (systemd, tor, radvd, CNI plugins,
# busybox-static).
#
# Usage: e2e/bench/scale.sh [SIZES]   (default 10,100,1000)
#   ONIONPOD_SCALE_FIGURES=pass,change,expose,ls,status,boot,memory picks figures;
#   ONIONPOD_SCALE_KEEP=1 keeps the lab up afterwards, ONIONPOD_SCALE_LAB=DIR takes it over.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=$PATH:/usr/local/go/bin
for tool in tor radvd busybox ip; do
	if ! command -v "$tool" >/dev/null; then
		echo "scale.sh: $tool is missing (bash .ci/install-deps)" >&2
		exit 2
	fi
done
if [ ! -x /lib/systemd/systemd ]; then
	echo "scale.sh: systemd is missing (bash .ci/install-deps)" >&2
	exit 2
fi
ONIONPOD_SCALE_SIZES="${1:-${ONIONPOD_SCALE_SIZES:-10,100,1000}}" \
	go test -run '^$' -bench '^BenchmarkScale$' -benchtime 1x -count 1 -timeout 3h ./e2e/scale/ |
	grep -v -e '^goos:' -e '^goarch:' -e '^pkg:' -e '^cpu:'
