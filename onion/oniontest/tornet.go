package oniontest

import (
	"context"

	"github.com/onionpod/onionpod/internal/lab/tornet"
)

// Options starts one tor.
type Options = tornet.Options

// Tor is one tor process started by this package.
type Tor = tornet.Tor

// NetworkOptions configures a private Tor network on 127.0.0.1.
type NetworkOptions = tornet.NetworkOptions

// Network is a running private Tor network.
type Network = tornet.Network

// Start checks the torrc, starts tor and waits until its control socket answers.
func Start(ctx context.Context, o Options) (*Tor, error) { return tornet.Start(ctx, o) }

// StartOffline starts a tor that cannot reach any network, with its files under dir.
func StartOffline(ctx context.Context, dir string) (*Tor, error) {
	return tornet.StartOffline(ctx, dir)
}

// StartNetwork starts a private Tor network on loopback (see tornet.StartNetwork).
func StartNetwork(ctx context.Context, o NetworkOptions) (*Network, error) {
	return tornet.StartNetwork(ctx, o)
}

// StopNetwork stops the nodes of a network started in dir with KeepAfterExit.
func StopNetwork(dir string) error { return tornet.StopNetwork(dir) }

// CheckTorrc refuses a torrc that could make tor contact the public Tor network.
func CheckTorrc(torrc []byte) error { return tornet.CheckTorrc(torrc) }
