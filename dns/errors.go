package dns

import (
	"errors"

	"github.com/onionpod/onionpod/internal/errkind"
)

var (
	// ErrBadInput marks invalid configuration or records (a name outside
	// the zone, an unknown TSIG algorithm, a malformed secret, ...).
	ErrBadInput = errkind.BadInput

	// ErrPending marks an RFC 2136 update that is recorded in the ledger but
	// not yet applied (the server is unreachable or failing). Run keeps
	// retrying it; nothing is lost.
	ErrPending = errors.New("update pending")

	// ErrRejected marks an update the server refused for good: TSIG failure
	// (BADKEY, BADSIG, BADTIME), REFUSED, NOTAUTH, NOTZONE. It is not retried
	// until Set is called with a different set of records or the publisher
	// is created again with a new configuration.
	ErrRejected = errors.New("update rejected")

	// ErrClosed is returned by a server or publisher used after Close.
	ErrClosed = errors.New("closed")
)

// ErrDamaged marks a state file (the built-in server's zone.json, an RFC
// 2136 ledger) that could not be read. The file is moved aside, never
// deleted; see Status.Damaged for what the backend did instead.
var ErrDamaged = errors.New("damaged")
