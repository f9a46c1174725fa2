// Package errkind holds the error kinds callers branch on across onionpod: one value for "the
// caller's input is wrong" (the CLI exits 2, the LocalAPI answers 400) and one for "no such
// thing" (404). Every package's own sentinels alias or wrap these, so a new package needs no
// change in the CLI's exit codes or the daemon's status codes.
package errkind

import (
	"errors"
	"fmt"
)

// Kinds of errors. Test them with errors.Is.
var (
	//lint:ignore ST1012 the kind is the value callers test for, named as what it is
	// BadInput: a name, port, image reference, key file, passphrase, config value... is wrong.
	// Retrying the same call cannot succeed.
	BadInput = errors.New("bad input")
	//lint:ignore ST1012 as above
	// NotFound: the app, key, image or record asked for does not exist.
	NotFound = errors.New("not found")
	//lint:ignore ST1012 as above
	// Conflict: the thing changed since the caller read it (optimistic concurrency).
	Conflict = errors.New("conflict")
)

// kindError is a message that matches a kind without repeating the kind's text.
type kindError struct {
	kind error
	msg  string
	err  error // wrapped, may be nil
}

func (e *kindError) Error() string {
	return e.msg
}

func (e *kindError) Is(target error) bool { return target == e.kind }

func (e *kindError) Unwrap() error { return e.err }

// BadInputf formats a message that matches BadInput (errors.Is) without saying "bad input".
// A %w verb in format is wrapped as usual.
func BadInputf(format string, args ...any) error {
	return newf(BadInput, format, args...)
}

// NotFoundf formats a message that matches NotFound.
func NotFoundf(format string, args ...any) error {
	return newf(NotFound, format, args...)
}

// Conflictf formats a message that matches Conflict.
func Conflictf(format string, args ...any) error {
	return newf(Conflict, format, args...)
}

func newf(kind error, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &kindError{kind: kind, msg: err.Error(), err: errors.Unwrap(err)}
}

// IsBadInput reports whether err is the caller's fault.
func IsBadInput(err error) bool { return errors.Is(err, BadInput) }

// IsNotFound reports whether err says the thing does not exist.
func IsNotFound(err error) bool { return errors.Is(err, NotFound) }
