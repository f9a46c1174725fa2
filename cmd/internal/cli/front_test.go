package cli

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/onionpod/onionpod/front"
)

// TestFrontCommand: internal front hands the front what its command line says, logs one line of
// what it serves (no time: the journal stamps it), and refuses bad input before anything
// listens (exit 2).
func TestFrontCommand(t *testing.T) {
	var got front.Config
	var gotFeed string
	serve := func(ctx context.Context, cfg front.Config, feed string, log *slog.Logger) error {
		got, gotFeed = cfg, feed
		return nil
	}
	onion := strings.Repeat("b", 56) + ".onion"
	opts := func(s IO) *frontOptions {
		return &frontOptions{IO: s, Ctx: t.Context(), Serve: serve, App: "blog", Host: "blog.box.example.", Target: 8080,
			Onion: onion, EdgeAddr: "fd00:1::1", Feed: "/run/onionpod/feed/feed.sock"}
	}
	_, errOut := bothTerminals(t, func(s IO) error { return runFront(opts(s)) })
	golden(t, "internal-front.stderr", errOut)
	want := front.Config{Host: "blog.box.example", Target: 8080, Onion: onion, EdgeAddr: netip.MustParseAddr("fd00:1::1")}
	if got != want || gotFeed != "/run/onionpod/feed/feed.sock" {
		t.Errorf("served %+v on feed %q, want %+v", got, gotFeed, want)
	}

	for _, bad := range []struct {
		name   string
		change func(o *frontOptions)
	}{
		{"app", func(o *frontOptions) { o.App = "-blog" }},
		{"host", func(o *frontOptions) { o.Host = "" }},
		{"target", func(o *frontOptions) { o.Target = 0 }},
		{"onion", func(o *frontOptions) { o.Onion = "blog.box.example" }},
		{"edge", func(o *frontOptions) { o.EdgeAddr = "fd00:1::1/64" }},
	} {
		got = front.Config{}
		s, _, _ := streams(false)
		o := opts(s)
		bad.change(o)
		if err := runFront(o); exitCode(err) != exitBadInput || got != (front.Config{}) {
			t.Errorf("bad %s: %v (exit %d), served %+v; want bad input, nothing served", bad.name, err, exitCode(err), got)
		}
	}

	// The command line as the daemon writes it in the front unit.
	var errOut2 bytes.Buffer
	code := Run(t.Context(), []string{"internal", "front", "blog", "--host", "blog.box.example", "--target", "0"}, IO{Out: &bytes.Buffer{}, Err: &errOut2})
	if code != exitBadInput || !strings.Contains(errOut2.String(), "--target") {
		t.Errorf("internal front --target 0: exit %d, %q", code, errOut2.String())
	}
}

// TestEdgeCommand: internal edge routes from the addresses given, logs where, and refuses an
// address without a port (exit 2).
func TestEdgeCommand(t *testing.T) {
	var got []string
	serve := func(ctx context.Context, https, http, feed string, log *slog.Logger) error {
		got = []string{https, http, feed}
		return nil
	}
	opts := func(s IO) *edgeOptions {
		return &edgeOptions{IO: s, Ctx: t.Context(), Serve: serve, HTTPS: "192.0.2.2:443", HTTP: "192.0.2.2:80", Feed: front.FeedSocket}
	}
	_, errOut := bothTerminals(t, func(s IO) error { return runEdge(opts(s)) })
	golden(t, "internal-edge.stderr", errOut)
	if strings.Join(got, " ") != "192.0.2.2:443 192.0.2.2:80 "+front.FeedSocket {
		t.Errorf("served %v", got)
	}
	got = nil
	s, _, _ := streams(false)
	o := opts(s)
	o.HTTP = "192.0.2.2"
	if err := runEdge(o); exitCode(err) != exitBadInput || got != nil {
		t.Errorf("--http without a port: %v (exit %d), served %v", err, exitCode(err), got)
	}
}
