package nettest

import (
	"context"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab/hostcheck"
	"github.com/onionpod/onionpod/internal/lab/lan"
)

// Missing returns why a LAN cannot be built on this machine ("" if it can): not root, or a tool
// (nsenter, unshare, radvd, and dnsmasq when ipv4) or a kernel feature missing.
func Missing(ipv4 bool) string {
	if err := hostcheck.Missing(lan.Needs(ipv4)...); err != nil {
		return "nettest: " + err.Error()
	}
	return ""
}

// New starts a LAN for a test and closes it in t.Cleanup. It skips the test (with the reason)
// when not root or a tool is missing.
func New(t testing.TB, opts Options) *LAN {
	t.Helper()
	if why := Missing(opts.IPv4); why != "" {
		t.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}
