package dnstest

import (
	"context"

	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/internal/lab/named"
)

// ErrMissing is returned when a required program is not installed.
var ErrMissing = named.ErrMissing

// NamedOptions configures a BIND9 named for tests.
type NamedOptions struct {
	// Dir holds the configuration, zone file, journal and pid file. Empty:
	// a temporary directory that Close removes.
	Dir string
	// Zone served (default "box.example.").
	Zone string
	// Keys may update the zone (update-policy grant KEY zonesub ANY) and
	// transfer it. Empty: one random hmac-sha256 key "onionpod-test.".
	Keys []dns.TSIGKey
	// Port on 127.0.0.1 and ::1. 0 picks a free one.
	Port int
	// Primary, when set ("127.0.0.1:PORT"), makes named a secondary of the
	// zone that transfers it from Primary signed with Keys[0] (and accepts
	// its NOTIFY). Otherwise named is the zone's primary.
	Primary string
	// Threads passed to named -n (0: named's default).
	Threads int
	// Persist keeps named running when this process dies. By default named
	// gets SIGTERM then.
	Persist bool
}

// Named is a running (or stopped) named: the engine's server, with its key as a dns.TSIGKey.
type Named struct {
	*named.Server
}

// StartNamed writes the configuration and starts named, listening only on
// 127.0.0.1 and ::1, and waits until it answers (see named.Start).
func StartNamed(ctx context.Context, opts NamedOptions) (*Named, error) {
	o := named.Options{Dir: opts.Dir, Zone: opts.Zone, Port: opts.Port, Primary: opts.Primary,
		Threads: opts.Threads, Persist: opts.Persist}
	for _, k := range opts.Keys {
		o.Keys = append(o.Keys, named.Key{Name: k.Name, Algorithm: k.Algorithm, Secret: k.Secret})
	}
	s, err := named.Start(ctx, o)
	if err != nil {
		return nil, err
	}
	return &Named{s}, nil
}

// Key is the first TSIG key (the one allowed to update the zone).
func (n *Named) Key() dns.TSIGKey { return tsigKey(n.Server.Key()) }

// RandomKey makes a TSIG key with a random 32-byte secret.
func RandomKey(name, algorithm string) dns.TSIGKey { return tsigKey(named.RandomKey(name, algorithm)) }

func tsigKey(k named.Key) dns.TSIGKey {
	return dns.TSIGKey{Name: k.Name, Algorithm: k.Algorithm, Secret: k.Secret}
}

// FreePort finds a port that is free for UDP and TCP on 127.0.0.1 and ::1.
func FreePort() (int, error) { return named.FreePort() }

// Dig runs the real dig with args and returns its standard output (see named.Dig).
func Dig(ctx context.Context, args ...string) (string, error) { return named.Dig(ctx, args...) }
