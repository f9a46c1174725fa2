#!/usr/bin/env bash
# Queries per second of onionpod's built-in DNS server against BIND9 serving
# the same 100-name zone on loopback, measured with dnsperf in one run.
# Query mix: 80% AAAA, 10% A, 10% NXDOMAIN. Each configuration runs ROUNDS
# times, the two servers interleaved; the median of each is compared.
#   pinned:   servers on core 0 (taskset -c 0), dnsperf on core 1 (-T 1)
#   unpinned: no taskset, dnsperf -T 2
# Usage: bash e2e/bench/dns.sh        (DURATION=10 ROUNDS=3 CLIENTS=8 MODES="pinned unpinned")
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-8}
MODES=${MODES:-pinned unpinned}
ZONE=bench.example

for tool in named dnsperf taskset go; do
	command -v "$tool" >/dev/null || { echo "dns.sh: $tool is missing (apt-get install bind9 dnsperf util-linux)" >&2; exit 2; }
done
if [ "$(nproc)" -lt 2 ]; then echo "dns.sh: needs 2 cores for pinning" >&2; exit 2; fi

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/onionpod-dnsbench.XXXXXX)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
	python3 - <<'PY'
import socket
for _ in range(100):
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        u.close(); t.close()
PY
}

echo "building the benchmark server..."
(cd "$ROOT" && go build -o "$WORK/benchserver" ./dns/internal/benchserver)

# The zone: app00..app99 with an AAAA each; app00..app09 also have an A.
: >"$WORK/records.txt"
cat >"$WORK/zone.db" <<ZONE
\$TTL 60
@ IN SOA ns1.$ZONE. hostmaster.$ZONE. 1 3600 600 1209600 60
@ IN NS ns1.$ZONE.
ns1 IN A 127.0.0.1
ZONE
for i in $(seq 0 99); do
	n=$(printf 'app%02d' "$i")
	echo "$n.$ZONE. 2001:db8:100::$((i + 1))" >>"$WORK/records.txt"
	echo "$n IN AAAA 2001:db8:100::$((i + 1))" >>"$WORK/zone.db"
	if [ "$i" -lt 10 ]; then
		echo "$n.$ZONE. 192.0.2.$((i + 1))" >>"$WORK/records.txt"
		echo "$n IN A 192.0.2.$((i + 1))" >>"$WORK/zone.db"
	fi
done
# 1000 queries: 80% AAAA, 10% A, 10% NXDOMAIN.
: >"$WORK/queries.txt"
for i in $(seq 0 999); do
	case $((i % 10)) in
	0) printf 'app%02d.%s A\n' $((i / 10 % 10)) "$ZONE" ;;
	1) printf 'nx%03d.%s AAAA\n' $((i / 10)) "$ZONE" ;;
	*) printf 'app%02d.%s AAAA\n' $((i * 7 % 100)) "$ZONE" ;;
	esac >>"$WORK/queries.txt"
done

start_servers() { # $1: mode
	local pin=()
	[ "$1" = pinned ] && pin=(taskset -c 0)
	BPORT=$(free_port)
	"${pin[@]}" "$WORK/benchserver" -listen "127.0.0.1:$BPORT" -zone "$ZONE." -records "$WORK/records.txt" >"$WORK/benchserver.log" 2>&1 &
	PIDS+=($!)
	NPORT=$(free_port)
	mkdir -p "$WORK/named"
	cp "$WORK/zone.db" "$WORK/named/zone.db"
	cat >"$WORK/named/named.conf" <<CONF
options {
	directory "$WORK/named";
	pid-file "$WORK/named/named.pid";
	session-keyfile "$WORK/named/session.key";
	listen-on port $NPORT { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	minimal-responses yes;
};
controls { };
logging { category default { null; }; category queries { null; }; };
zone "$ZONE" { type primary; file "zone.db"; };
CONF
	"${pin[@]}" named -g -c "$WORK/named/named.conf" >"$WORK/named.log" 2>&1 &
	PIDS+=($!)
	for port in "$BPORT" "$NPORT"; do
		for _ in $(seq 100); do
			dig +short +time=1 +tries=1 -p "$port" @127.0.0.1 "app01.$ZONE" AAAA 2>/dev/null | grep -q 2001 && continue 2
			sleep 0.1
		done
		echo "dns.sh: server on port $port did not come up" >&2
		cat "$WORK/benchserver.log" "$WORK/named.log" >&2
		exit 1
	done
}

stop_servers() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	PIDS=()
}

perf() { # $1: mode, $2: port -> prints qps
	local cmd=(dnsperf -s 127.0.0.1 -p "$2" -d "$WORK/queries.txt" -l "$DURATION" -c "$CLIENTS" -q 200)
	if [ "$1" = pinned ]; then cmd=(taskset -c 1 "${cmd[@]}" -T 1); else cmd=("${cmd[@]}" -T 2); fi
	"${cmd[@]}" >"$WORK/perf.out" 2>&1 || { cat "$WORK/perf.out" >&2; exit 1; }
	local lost
	lost=$(awk '/Queries lost:/ {print $3}' "$WORK/perf.out")
	[ "${lost:-0}" -gt $(( $(awk '/Queries sent:/ {print $3}' "$WORK/perf.out") / 100 )) ] && echo "  (warning: $lost queries lost)" >&2
	awk '/Queries per second:/ {printf "%d\n", $4}' "$WORK/perf.out"
}

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "dnsperf $(dnsperf -h 2>&1 | head -1 | grep -o 'dnsperf [0-9.]*' || true); $(named -v); Go $(go env GOVERSION)"
echo "zone: 100 names; queries: 80% AAAA, 10% A, 10% NXDOMAIN; ${DURATION}s per run, $ROUNDS interleaved rounds, $CLIENTS dnsperf clients"
for mode in $MODES; do
	start_servers "$mode"
	B=() N=()
	for r in $(seq "$ROUNDS"); do
		b=$(perf "$mode" "$BPORT"); B+=("$b")
		n=$(perf "$mode" "$NPORT"); N+=("$n")
		printf '  %-8s round %d: builtin %7d qps   BIND %7d qps\n' "$mode" "$r" "$b" "$n"
	done
	stop_servers
	mb=$(median "${B[@]}"); mn=$(median "${N[@]}")
	printf '%-8s median: builtin %d qps, BIND %d qps, ratio builtin/BIND %s\n' "$mode" "$mb" "$mn" "$(awk -v a="$mb" -v b="$mn" 'BEGIN {printf "%.2fx", a/b}')"
done
