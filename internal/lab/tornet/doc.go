// Package tornet starts real tor processes for `onionpod lab` and for the tests
// (onion/oniontest wraps it for a *testing.T): an offline tor (DisableNetwork 1) with a unix
// control socket, and a private Tor network on loopback (three directory authorities, relays
// and a client) that onion services can join.
//
// Safety: every tor started here is checked first: its torrc must say DisableNetwork 1, or
// be a TestingTorNetwork whose directory authorities are all on 127.0.0.1 with the default
// fallback directories off. Processes are stopped by PID only, and by default they exit
// with the process that started them (__OwningControllerProcess).
package tornet

import "github.com/onionpod/onionpod/internal/lab/hostcheck"

// Needs are the parts of the machine tor needs here: root (tor checks the ownership of its
// control socket's and keys' directories) and tor with tor-gencert.
func Needs() []hostcheck.Part { return []hostcheck.Part{hostcheck.Root, hostcheck.Tor} }
