#!/usr/bin/env bash
# Every benchmark of onionpod, one after another (nothing else should run: the figures are
# timings), then one summary: each benchmark script under e2e/bench (its closing lines: medians
# and ratios), and every Go benchmark (`go test -run '^$' -bench .`, one package at a time) with
# its metrics, ratios against the alternative included. Full outputs stay in a log directory.
#
# Needs root and what `bash .ci/install-deps` installs (the scripts say what they miss; a script
# that exits 2 for a missing tool is reported as skipped). make bench runs it.
#
# Usage: e2e/bench/run-all.sh
#   BENCHTIME=1s (go test -benchtime), LOGDIR=(a new temp dir),
#   SCRIPTS="e2e/bench/pods.sh ..." (default: every script; none: no script), PKGS="./onion ..."
#   (default: every package with a Go benchmark; none: no Go pass)
set -uo pipefail
cd "$(dirname "$0")/../.."
export PATH=$PATH:/usr/local/go/bin

BENCHTIME=${BENCHTIME:-1s}
LOGDIR=${LOGDIR:-$(mktemp -d /tmp/onionpod-bench.XXXXXX)}
mkdir -p "$LOGDIR"
# Go benchmarks a script already runs (pods.sh: BenchmarkPodsVsPodman, scale.sh: BenchmarkScale),
# skipped by the Go pass.
SCRIPTED='^BenchmarkPodsVsPodman$|^BenchmarkScale$'

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
# summary_lines is how many closing lines of a script's log the summary shows (scale.sh closes
# with its table of figures).
summary_lines() { if [ "$1" = scale ]; then echo 20; else echo 6; fi; }
declare -a summary=()
failed=0

# The scripts, each in full to its log and the terminal.
for script in ${SCRIPTS:-e2e/bench/*.sh}; do
	name=$(basename "$script" .sh)
	[ "$name" = run-all ] || [ "$script" = none ] && continue
	say "$script"
	start=$(date +%s)
	bash "$script" 2>&1 | tee "$LOGDIR/$name.log"
	rc=${PIPESTATUS[0]}
	took=$(( $(date +%s) - start ))
	case $rc in
	0) status="ok" ;;
	2) status="SKIPPED (a tool is missing, see $LOGDIR/$name.log)" ;;
	*) status="FAILED (exit $rc)"; failed=1 ;;
	esac
	summary+=("$script: $status in ${took} s")
	if [ "$rc" = 0 ]; then
		while IFS= read -r line; do summary+=("    $line"); done < <(
			grep -v -e '^PASS$' -e '^ok ' -e '^goos:' -e '^goarch:' -e '^pkg:' -e '^cpu:' "$LOGDIR/$name.log" | tail -n "$(summary_lines "$name")")
	fi
done

# The Go benchmarks: the packages that declare one, one package at a time (-p 1).
pkgs=()
if [ -n "${PKGS:-}" ]; then
	[ "$PKGS" != none ] && read -r -a pkgs <<<"$PKGS"
else
	while read -r pkg dir; do
		if grep -qs '^func Benchmark' "$dir"/*_test.go; then pkgs+=("$pkg"); fi
	done < <(go list -f '{{.ImportPath}} {{.Dir}}' ./...)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
say "go test -run '^\$' -bench . -benchtime $BENCHTIME -skip '$SCRIPTED' -p 1 (${#pkgs[@]} packages)"
start=$(date +%s)
go test -run '^$' -bench . -benchtime "$BENCHTIME" -skip "$SCRIPTED" -p 1 -count 1 -timeout 90m "${pkgs[@]}" 2>&1 |
	tee "$LOGDIR/go.log"
rc=${PIPESTATUS[0]}
took=$(( $(date +%s) - start ))
if [ "$rc" = 0 ]; then status="ok"; else status="FAILED (exit $rc)"; failed=1; fi
summary+=("go benchmarks (${pkgs[*]##*/onionpod/}): $status in ${took} s")
while IFS= read -r line; do summary+=("    $line"); done < <(
	awk '/^pkg: / {pkg=$2; sub(".*/onionpod/", "", pkg)} /^Benchmark/ {$1=pkg": "$1; print} /^(FAIL|--- FAIL|--- SKIP)/ {print}' "$LOGDIR/go.log" |
		sed -e 's/\t/ /g' -e 's/  */ /g')
fi

echo
say "summary (full outputs in $LOGDIR)"
printf '%s\n' "${summary[@]}"
exit "$failed"
