// Package nettest builds a simulated IPv6 LAN in network namespaces for tests: a thin *testing.T
// wrapper over internal/lab/lan (the engine `onionpod lab` uses too). See that package for the
// LAN's layout.
package nettest

import (
	"context"

	"github.com/onionpod/onionpod/internal/lab/lan"
)

// Options configure a LAN. The zero value is a LAN advertising 2001:db8:1::/64 without DHCPv4.
type Options = lan.Options

// LAN is a running simulated LAN.
type LAN = lan.LAN

// DHCPLease is one line of dnsmasq's lease file.
type DHCPLease = lan.DHCPLease

// DefaultPrefix is the prefix advertised when Options.Prefix is unset.
var DefaultPrefix = lan.DefaultPrefix

// RouterIPv4 is the router's address when Options.IPv4 is set.
var RouterIPv4 = lan.RouterIPv4

// Start builds the LAN and starts its router daemons (see lan.Start).
func Start(ctx context.Context, opts Options) (*LAN, error) { return lan.Start(ctx, opts) }

// Reopen takes over a running LAN started in another process, from its work dir.
func Reopen(workDir string) (*LAN, error) { return lan.Reopen(workDir) }

// Exec runs argv inside the network namespace at netnsPath and returns its combined output.
func Exec(ctx context.Context, netnsPath string, argv ...string) ([]byte, error) {
	return lan.Exec(ctx, netnsPath, argv...)
}
