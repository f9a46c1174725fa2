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
# needs. The end-to-end tests run after them, alone, so their timing targets are measured on a
# quiet machine. testreport prints every test (ok, FAIL, skip with its reason) and fails on an
# unexpected skip: the integration tests must run here, not skip.
test: deps
	set -o pipefail; { $(GO) test -count=1 -p 2 -timeout 40m -json $$($(GO) list ./... | grep -v '/e2e$$') && \
		$(GO) test -count=1 -timeout 40m -json ./e2e; } | $(GO) run ./.ci/testreport

test-short:
	$(GO) test -short ./...

bench: deps build
	bash e2e/bench/run-all.sh

clean:
	rm -rf bin
