#!/usr/bin/env bash
# Queries per second of onionpod's built-in DNS server against BIND9, Knot and NSD, each
# configured for its best authoritative performance as its own documentation says, serving the
# same 100-name zone on loopback, measured with dnsperf in one run. Query mix: 80% AAAA, 10% A,
# 10% NXDOMAIN. Each mode runs ROUNDS rounds, the servers interleaved within each round; the
# medians are compared.
#   pinned:   every server on core 0 (taskset -c 0), dnsperf on core 1 (-T 1)
#   unpinned: no taskset, dnsperf -T 2
# A UDP echo server with the built-in server's batched socket code (dns/internal/udpbatch), doing
# no DNS work at all, gives the floor: the most this machine and dnsperf measure on these sockets.
#
# The run FAILS (exit 1) when any server answers a sample of the zone's names wrongly (checked
# with dig against the expected zone, before and after the rounds), loses more than 1% of its
# queries in any round, or (BIND) writes a query log.
#
# BASELINE=REV adds "baseline": the built-in server as git revision REV builds it, interleaved
# with the working tree's, to show what a change did to its throughput (builtin/baseline).
#
# Usage: bash e2e/bench/dns.sh     (DURATION=10 ROUNDS=3 CLIENTS=8 MODES="pinned unpinned"
#                                   SERVERS="builtin bind knot nsd echo" BASELINE=main)
# Missing Debian packages (bind9 knot knot-dnsutils nsd dnsperf) are installed when run as root.
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-8}
MODES=${MODES:-pinned unpinned}
SERVERS=${SERVERS:-builtin bind knot nsd echo}
BASELINE=${BASELINE:-}
[ -z "$BASELINE" ] || SERVERS="$SERVERS baseline"
ZONE=bench.example
CORES=$(nproc)

need_pkgs=()
for t in named:bind9 knotd:knot kdig:knot-dnsutils nsd:nsd dnsperf:dnsperf dig:bind9-dnsutils taskset:util-linux; do
	command -v "${t%%:*}" >/dev/null || [ -x "/usr/sbin/${t%%:*}" ] || need_pkgs+=("${t#*:}")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then echo "dns.sh: missing ${need_pkgs[*]}: apt-get install them" >&2; exit 2; fi
	# Debian's hook that keeps package scripts from starting the servers on install.
	[ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; }
	echo "installing ${need_pkgs[*]}..."
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
export PATH=$PATH:/usr/sbin
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
if [ "$CORES" -lt 2 ]; then echo "dns.sh: needs 2 cores for pinning" >&2; exit 2; fi

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/onionpod-dnsbench.XXXXXX)
PIDS=()
stop_servers() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	PIDS=()
}
cleanup() {
	stop_servers
	rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
	echo "dns.sh: FAIL: $*" >&2
	exit 1
}

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
if [ -n "$BASELINE" ]; then
	echo "building the benchmark server of $BASELINE ($(git -C "$ROOT" rev-parse --short "$BASELINE"))..."
	mkdir "$WORK/baseline-src"
	git -C "$ROOT" archive "$BASELINE" | tar -x -C "$WORK/baseline-src"
	(cd "$WORK/baseline-src" && go build -o "$WORK/baseline-benchserver" ./dns/internal/benchserver)
fi

# The zone: app00..app99 with an AAAA each; app00..app09 also have an A.
: >"$WORK/records.txt"
cat >"$WORK/zone.db" <<ZONE
\$ORIGIN $ZONE.
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

# The sanity sample and the answers the zone gives: "NAME TYPE STATUS [RDATA...]".
: >"$WORK/sample.txt"
: >"$WORK/expected.txt"
for i in $(seq 0 7 99) 99; do
	n=$(printf 'app%02d.%s.' "$i" "$ZONE")
	echo "$n AAAA" >>"$WORK/sample.txt"
	echo "$n AAAA NOERROR 2001:db8:100::$((i + 1))" >>"$WORK/expected.txt"
done
for i in 0 3 9; do
	n=$(printf 'app%02d.%s.' "$i" "$ZONE")
	echo "$n A" >>"$WORK/sample.txt"
	echo "$n A NOERROR 192.0.2.$((i + 1))" >>"$WORK/expected.txt"
done
for q in "app42.$ZONE. A NOERROR" "app42.$ZONE. TXT NOERROR" "nx001.$ZONE. AAAA NXDOMAIN" "nx999.$ZONE. A NXDOMAIN" \
	"$ZONE. NS NOERROR ns1.$ZONE." "ns1.$ZONE. A NOERROR 127.0.0.1"; do
	set -- $q
	echo "$1 $2" >>"$WORK/sample.txt"
	echo "$q" >>"$WORK/expected.txt"
done

# answers PORT: what the server says for the sample, in the expected form.
answers() {
	local name type out st rd
	while read -r name type; do
		out=$(dig @127.0.0.1 -p "$1" +norec +tries=2 +time=2 +noall +comments +answer "$name" "$type") || true
		st=$(sed -n 's/.*status: \([A-Z]*\).*/\1/p' <<<"$out")
		rd=$(awk -v t="$type" '!/^;/ && $4 == t {print $5}' <<<"$out" | sort | xargs)
		echo "$name $type ${st:-NOANSWER}${rd:+ $rd}"
	done <"$WORK/sample.txt"
}

# check NAME PORT: the server's answers for the sample must be the zone's.
check() {
	local got
	got=$(answers "$2")
	if [ "$got" != "$(cat "$WORK/expected.txt")" ]; then
		diff <(cat "$WORK/expected.txt") <(echo "$got") >&2 || true
		fail "$1 answers the sample wrongly (< expected, > got)"
	fi
}

write_configs() { # $1: mode
	local cores=$CORES
	[ "$1" = pinned ] && cores=1
	rm -rf "$WORK/bind" "$WORK/knot" "$WORK/nsd"
	mkdir -p "$WORK/bind" "$WORK/knot" "$WORK/nsd"
	cp "$WORK/zone.db" "$WORK/bind/"
	cp "$WORK/zone.db" "$WORK/knot/"
	cp "$WORK/zone.db" "$WORK/nsd/"
	# BIND: an authoritative-only server; no logging statement at all (declaring a `queries`
	# category, even to null, turns the query log on); threads = BIND's default (one per CPU).
	cat >"$WORK/bind/named.conf" <<CONF
options {
	directory "$WORK/bind";
	pid-file "$WORK/bind/named.pid";
	session-keyfile "$WORK/bind/session.key";
	listen-on port ${PORT[bind]:-0} { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	minimal-responses yes;
};
controls { };
zone "$ZONE" { type primary; file "zone.db"; };
CONF
	# Knot: the defaults (a UDP worker per CPU, no RRL: mod-rrl is not loaded).
	cat >"$WORK/knot/knot.conf" <<CONF
server:
    rundir: "$WORK/knot"
    listen: 127.0.0.1@${PORT[knot]:-0}
log:
  - target: stderr
    any: warning
database:
    storage: "$WORK/knot"
zone:
  - domain: $ZONE
    storage: "$WORK/knot"
    file: "zone.db"
CONF
	# NSD: one server per core the server may use, SO_REUSEPORT sockets for them, minimal
	# responses, and response rate limiting off (Debian's build limits every source otherwise).
	cat >"$WORK/nsd/nsd.conf" <<CONF
server:
    ip-address: 127.0.0.1@${PORT[nsd]:-0}
    do-ip6: no
    server-count: $cores
    reuseport: yes
    minimal-responses: yes
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
    username: ""
    chroot: ""
    zonesdir: "$WORK/nsd"
    database: ""
    zonelistfile: "$WORK/nsd/zone.list"
    xfrdfile: "$WORK/nsd/xfrd.state"
    pidfile: "$WORK/nsd/nsd.pid"
    logfile: "$WORK/nsd/nsd.log"
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: $ZONE
    zonefile: "zone.db"
CONF
}

declare -A PORT
start_servers() { # $1: mode
	local pin=()
	[ "$1" = pinned ] && pin=(taskset -c 0)
	for s in $SERVERS; do PORT[$s]=$(free_port); done
	write_configs "$1"
	for s in $SERVERS; do
		case $s in
		builtin) "${pin[@]}" "$WORK/benchserver" -listen "127.0.0.1:${PORT[$s]}" -zone "$ZONE." -records "$WORK/records.txt" >"$WORK/builtin.log" 2>&1 & ;;
		baseline) "${pin[@]}" "$WORK/baseline-benchserver" -listen "127.0.0.1:${PORT[$s]}" -zone "$ZONE." -records "$WORK/records.txt" >"$WORK/baseline.log" 2>&1 & ;;
		echo) "${pin[@]}" "$WORK/benchserver" -echo -listen "127.0.0.1:${PORT[$s]}" >"$WORK/echo.log" 2>&1 & ;;
		bind) "${pin[@]}" named -g -c "$WORK/bind/named.conf" >"$WORK/bind.log" 2>&1 & ;;
		knot) "${pin[@]}" knotd -c "$WORK/knot/knot.conf" >"$WORK/knot.log" 2>&1 & ;;
		nsd) "${pin[@]}" nsd -d -c "$WORK/nsd/nsd.conf" >"$WORK/nsd.out" 2>&1 & ;;
		esac
		PIDS+=($!)
	done
	for s in $SERVERS; do
		[ "$s" = echo ] && continue
		for _ in $(seq 100); do
			dig +short +time=1 +tries=1 -p "${PORT[$s]}" @127.0.0.1 "app01.$ZONE" AAAA 2>/dev/null | grep -q 2001 && continue 2
			sleep 0.1
		done
		cat "$WORK"/*.log "$WORK"/nsd/nsd.log "$WORK/nsd.out" >&2 2>/dev/null || true
		fail "$s on port ${PORT[$s]} did not come up"
	done
	for s in $SERVERS; do [ "$s" = echo ] || check "$s" "${PORT[$s]}"; done
}

perf() { # $1: mode, $2: server -> prints qps; fails on more than 1% lost
	local cmd=(dnsperf -s 127.0.0.1 -p "${PORT[$2]}" -d "$WORK/queries.txt" -l "$DURATION" -c "$CLIENTS" -q 200)
	if [ "$1" = pinned ]; then cmd=(taskset -c 1 "${cmd[@]}" -T 1); else cmd=("${cmd[@]}" -T "$CORES"); fi
	"${cmd[@]}" >"$WORK/perf.out" 2>&1 || { cat "$WORK/perf.out" >&2; fail "dnsperf against $2"; }
	local sent lost
	sent=$(awk '/Queries sent:/ {print $3}' "$WORK/perf.out")
	lost=$(awk '/Queries lost:/ {print $3}' "$WORK/perf.out")
	if [ "${sent:-0}" -eq 0 ] || [ "$((lost * 100))" -gt "$sent" ]; then
		cat "$WORK/perf.out" >&2
		fail "$2 ($1) lost $lost of $sent queries (more than 1%)"
	fi
	awk '/Queries per second:/ {printf "%d\n", $4}' "$WORK/perf.out"
}

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a/b}'; }

echo "$(dnsperf -h 2>&1 | grep -o 'dnsperf [0-9.]*' | head -1 || true) $(dpkg-query -W -f='${Version}' dnsperf 2>/dev/null);" \
	"$(named -v); Knot $(knotd -V | grep -o '[0-9][0-9.]*' | head -1); NSD $(nsd -v 2>&1 | grep -o '[0-9][0-9.]*' | head -1); $(go env GOVERSION);" \
	"$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); kernel $(uname -r)"
echo "zone: 100 names; queries: 80% AAAA, 10% A, 10% NXDOMAIN; ${DURATION}s per run, $ROUNDS interleaved rounds, $CLIENTS dnsperf clients"
declare -A MED
for mode in $MODES; do
	start_servers "$mode"
	echo "$mode: configurations (the built-in server: benchserver -listen 127.0.0.1:PORT -zone $ZONE. -records FILE, one UDP socket per CPU it may use)"
	for f in bind/named.conf knot/knot.conf nsd/nsd.conf; do
		case " $SERVERS " in *" ${f%%/*} "*) sed "s|^|    $f: |" "$WORK/$f" ;; esac
	done
	declare -A Q=()
	for r in $(seq "$ROUNDS"); do
		line="  $mode round $r:"
		for s in $SERVERS; do
			q=$(perf "$mode" "$s")
			Q[$s]="${Q[$s]:-} $q"
			line="$line  $s $q"
		done
		echo "$line"
	done
	for s in $SERVERS; do [ "$s" = echo ] || check "$s" "${PORT[$s]}"; done
	if [[ " $SERVERS " == *" bind "* ]] && grep -q 'query:' "$WORK/bind.log"; then fail "BIND wrote a query log"; fi
	stop_servers
	for s in $SERVERS; do
		# shellcheck disable=SC2086
		MED[$mode.$s]=$(median ${Q[$s]})
	done
	unset Q
done

echo
echo "median queries/s (dnsperf, loopback; pinned: server on core 0, dnsperf on core 1)"
printf '%-10s' ""
for mode in $MODES; do printf '%12s' "$mode"; done
echo
for s in $SERVERS; do
	printf '%-10s' "$s"
	for mode in $MODES; do printf '%12s' "${MED[$mode.$s]}"; done
	echo
done
for mode in $MODES; do
	best=0 bestname="" line="$mode:"
	for s in $SERVERS; do
		line="$line $s ${MED[$mode.$s]}"
		case $s in builtin | echo | baseline) continue ;; esac
		if [ "${MED[$mode.$s]}" -gt "$best" ]; then best=${MED[$mode.$s]} bestname=$s; fi
	done
	line="$line qps;"
	[ -n "$bestname" ] && line="$line builtin/best peer ($bestname) $(ratio "${MED[$mode.builtin]}" "$best");"
	for s in $SERVERS; do
		case $s in builtin) ;; echo) line="$line builtin/echo floor $(ratio "${MED[$mode.builtin]}" "${MED[$mode.echo]}");" ;;
		*) line="$line builtin/$s $(ratio "${MED[$mode.builtin]}" "${MED[$mode.$s]}");" ;; esac
	done
	echo "$line"
done
