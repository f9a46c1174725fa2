package network_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
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

// Attaches and detaches from many goroutines at once (the Manager is safe for concurrent use):
// every pod gets its own ULA and answers on it; afterwards nothing is left.
func TestConcurrentAttachDetach(t *testing.T) {
	t.Parallel()
	const pods = 12
	e := newEnv(t, nettest.Options{})
	e.waitForBox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	results := make([]network.Result, pods)
	errs := make(chan error, 2*pods)
	var wg sync.WaitGroup
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := network.Attachment{App: fmt.Sprintf("c%02d", i), OnionOnly: i%3 == 0}
			var err error
			results[i], err = e.m.Attach(ctx, a)
			errs <- err
			_, err = e.m.Attach(ctx, a) // the same app twice at once is fine too
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for i, r := range results {
		if seen[r.ULA.String()] {
			t.Fatalf("ULA %s given twice", r.ULA)
		}
		seen[r.ULA.String()] = true
		serveHTTP(t, r.Netns, fmt.Sprintf("c%02d", i))
		fetchEventually(t, e.lan.BoxNetns(), httpURL(r.ULA), fmt.Sprintf("c%02d", i))
	}
	derrs := make(chan error, pods)
	for i := range pods {
		go func() { derrs <- e.m.Detach(ctx, fmt.Sprintf("c%02d", i)) }()
	}
	for range pods {
		if err := <-derrs; err != nil {
			t.Fatal(err)
		}
	}
}
