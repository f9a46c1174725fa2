package network_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/network/nettest"
)

// Fifty pods attach (timed) and every one answers over HTTP: from the LAN client by its SLAAC
// address, and from the box by its ULA.
func TestFiftyPodsReachable(t *testing.T) {
	t.Parallel()
	const pods = 50
	e := newEnv(t, nettest.Options{})
	e.waitForBox(t)
	start := time.Now()
	results := make([]network.Result, pods)
	for i := range pods {
		results[i] = e.attach(t, network.Attachment{App: fmt.Sprintf("pod%02d", i)})
	}
	t.Logf("%d pods attached in %v", pods, time.Since(start))
	for i, r := range results {
		serveHTTP(t, r.Netns, fmt.Sprintf("pod%02d", i))
	}
	for i := range results {
		e.waitLAN(t, fmt.Sprintf("pod%02d", i))
	}
	t.Logf("all SLAAC addresses usable %v after the first attach", time.Since(start))

	for _, from := range []struct {
		netns string
		addr  func(network.Result) string
	}{
		{e.lan.ClientNetns(), func(r network.Result) string { return r.LAN.String() }},
		{e.lan.BoxNetns(), func(r network.Result) string { return r.ULA.String() }},
	} {
		var script strings.Builder
		for _, r := range results {
			fmt.Fprintf(&script, "curl -sS -g --retry 3 --retry-delay 1 --retry-all-errors --max-time 3 http://[%s]/; echo\n", from.addr(r))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		out, err := nettest.Exec(ctx, from.netns, "sh", "-c", script.String())
		cancel()
		if err != nil {
			t.Fatalf("fetching from %s: %v", from.netns, err)
		}
		got := strings.Fields(string(out))
		if len(got) != pods {
			t.Fatalf("from %s: %d answers, want %d:\n%s", from.netns, len(got), pods, out)
		}
		for i, body := range got {
			if body != fmt.Sprintf("pod%02d", i) {
				t.Errorf("from %s: pod %d answered %q", from.netns, i, body)
			}
		}
	}
}
