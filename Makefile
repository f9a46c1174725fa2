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

# -p 2: two test binaries at a time on a 2-core machine; each package boots what it needs.
# testreport prints every test (ok, FAIL, skip with its reason) and fails on an unexpected skip:
# the integration tests must run here, not skip.
test: deps
	set -o pipefail; $(GO) test -count=1 -p 2 -timeout 75m -json ./... | $(GO) run ./.ci/testreport

test-short:
	$(GO) test -short ./...

bench: deps build
	bash e2e/bench/run-all.sh

clean:
	rm -rf bin
