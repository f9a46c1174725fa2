package oniontest

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab/hostcheck"
	"github.com/onionpod/onionpod/internal/lab/tornet"
)

// SkipReason says why real-tor tests cannot run here ("" when they can): not root (tor's
// control socket and key directories are checked for ownership), or tor or tor-gencert missing.
func SkipReason() string {
	if err := hostcheck.Missing(tornet.Needs()...); err != nil {
		return "oniontest: " + err.Error()
	}
	return ""
}

// TempDir makes a short-named temporary directory (unix socket paths are limited to 107
// bytes, and t.TempDir names can be long) removed at the end of the test.
func TempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "oniontest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// NewOffline starts an offline tor for the test, or skips the test with the reason. It is
// stopped when the test ends.
func NewOffline(t testing.TB) *Tor {
	t.Helper()
	if r := SkipReason(); r != "" {
		t.Skip(r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tor, err := StartOffline(ctx, TempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tor.Close() })
	return tor
}

// SharedNetwork starts one private Tor network per test binary (it costs 15-35 s). Declare
// one as a variable of the test package and close it from TestMain:
//
//	var torNet oniontest.SharedNetwork
//
//	func TestMain(m *testing.M) { code := m.Run(); torNet.Close(); os.Exit(code) }
//
//	func TestX(t *testing.T) { n := torNet.Get(t); ... }
//
// Get skips the test (with the reason) when not root, tor is missing, or in -short mode.
type SharedNetwork struct {
	once sync.Once
	net  *Network
	dir  string
	err  error
}

// Get starts the network on first use and returns it once it has formed (WaitFormed: a tor
// joining it picks its guards from a whole consensus); it does not wait for the client's
// bootstrap (call WaitReady, possibly after starting the tors that join it).
func (s *SharedNetwork) Get(t testing.TB) *Network {
	t.Helper()
	if r := SkipReason(); r != "" {
		t.Skip(r)
	}
	if testing.Short() {
		t.Skip("oniontest: private Tor network skipped in -short mode")
	}
	s.once.Do(func() {
		s.dir, s.err = os.MkdirTemp("", "oniontest-net-")
		if s.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if s.net, s.err = StartNetwork(ctx, NetworkOptions{Dir: s.dir}); s.err == nil {
			s.err = s.net.WaitFormed(ctx)
		}
	})
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.net
}

// Close stops the network and removes its directory.
func (s *SharedNetwork) Close() error {
	if s.net != nil {
		s.net.Close()
	}
	if s.dir != "" {
		return os.RemoveAll(s.dir)
	}
	return nil
}
