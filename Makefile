# onionpod: the two commands of the README, and a few helpers.
#   sudo make demo   the lab in namespaces: an app reached over its .onion and over IPv6 + DNS
#   sudo make test   every test, with real tor, systemd, CNI plugins, BIND (installs what is missing)
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN := bin/onionpod

.PHONY: all build deps demo test test-short bench clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/onionpod

deps:
	bash .ci/install-deps

demo: deps build
	./$(BIN) demo

# The packages' tests run two binaries at a time (-p 2 on a 2-core machine); each boots what it
# needs. The end-to-end tests run after them, alone: they bring up the whole lab (a box, a LAN, a
# private Tor network). No test asserts a speed (targets are benchmarks: make bench).
# testreport prints every test (ok, FAIL, skip with its reason) and fails on an unexpected skip:
# the integration tests must run here, not skip.
test: deps
	set -o pipefail; { $(GO) test -count=1 -p 2 -timeout 40m -json $$($(GO) list ./... | grep -v '/e2e$$') && \
		$(GO) test -count=1 -timeout 40m -json ./e2e; } | $(GO) run ./.ci/testreport

# -short skips the slowest integration tests (the private Tor network, 100 apps, the e2e lab).
test-short:
	$(GO) test -short ./...

# Every benchmark, one after another, and one summary of figures and ratios (e2e/bench/run-all.sh).
bench: build
	bash .ci/install-deps --bench
	bash e2e/bench/run-all.sh

clean:
	rm -rf bin
