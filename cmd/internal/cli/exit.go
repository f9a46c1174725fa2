package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/onionpod/onionpod/internal/errkind"
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

// errBadInput marks bad input detected by the CLI itself (internal/errkind's kind).
var errBadInput = errkind.BadInput

// exitCode decides the exit code of every command: 2 for a usage error or bad input (any error
// of internal/errkind's BadInput kind, whichever package it comes from), a child's own code,
// 1 for any other failure.
func exitCode(err error) int {
	var u *usageError
	var child *childExit
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &u):
		return exitBadInput
	case errors.As(err, &child):
		return child.code
	case errors.Is(err, errkind.BadInput):
		return exitBadInput
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
