package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/onion"
	"github.com/onionpod/onionpod/pods"
)

// Exit codes, decided here and nowhere else.
const (
	exitOK       = 0
	exitFailed   = 1
	exitBadInput = 2
)

// usageError is a mistake in how a command was called (flags, arguments): exit 2 with a usage hint.
type usageError struct {
	err     error
	cmdPath string
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// badInput lists the sentinels of every package whose errors mean "the user's input is wrong".
func badInput() []error {
	return []error{configs.ErrInvalid, store.ErrInvalid, errBadInput, api.ErrBadInput,
		onion.ErrBadInput, pods.ErrBadInput, network.ErrBadInput, dns.ErrBadInput}
}

// errBadInput marks bad input detected by the CLI itself.
var errBadInput = errors.New("bad input")

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var u *usageError
	if errors.As(err, &u) {
		return exitBadInput
	}
	var child *childExit
	if errors.As(err, &child) {
		return child.code
	}
	for _, sentinel := range badInput() {
		if errors.Is(err, sentinel) {
			return exitBadInput
		}
	}
	return exitFailed
}

// describe renders an error for the terminal: the message, then for usage errors a pointer to help.
func describe(err error) string {
	msg := "onionpod: " + strings.TrimPrefix(err.Error(), "onionpod: ")
	var u *usageError
	if errors.As(err, &u) && u.cmdPath != "" {
		msg += fmt.Sprintf("\nRun '%s --help' for usage.", u.cmdPath)
	}
	return msg
}
