package network_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/network/nettest"
)

// An onion-only pod has no LAN link: the box reaches it by its ULA, but it cannot reach the LAN
// client (nor the router), and the client cannot reach it.
func TestOnionOnlyPodIsolated(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nettest.Options{})
	e.waitForBox(t)
	ctx := context.Background()
	// A LAN pod too, so the shim exists: the onion-only pod must not reach the LAN through it either.
	e.attach(t, network.Attachment{App: "public"})
	res := e.attach(t, network.Attachment{App: "secret", OnionOnly: true})
	if res.LAN.IsValid() {
		t.Errorf("onion-only pod reports a LAN address %s", res.LAN)
	}
	serveHTTP(t, res.Netns, "only over tor")
	fetchEventually(t, e.lan.BoxNetns(), httpURL(res.ULA), "only over tor")
	if err := e.m.Check(ctx, "secret"); err != nil {
		t.Fatal(err)
	}

	links, err := nettest.Exec(ctx, res.Netns, "ip", "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(strings.TrimSpace(string(links)), "\n") + 1; n != 2 || strings.Contains(string(links), "macvlan") {
		t.Errorf("pod should have exactly lo and its veth to the host:\n%s", links)
	}
	routes, _ := nettest.Exec(ctx, res.Netns, "ip", "-6", "route", "show", "default")
	if len(strings.TrimSpace(string(routes))) != 0 {
		t.Errorf("onion-only pod has a default route: %s", routes)
	}

	client, err := e.lan.ClientAddr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	serveHTTP(t, e.lan.ClientNetns(), "LAN host")
	// ping works from the pod: the negative checks below mean something.
	if out, err := nettest.Exec(ctx, res.Netns, "busybox", "ping", "-6", "-c1", "-W2", e.cfg.ULAPrefix.Addr().Next().String()); err != nil {
		t.Fatalf("onion-only pod cannot ping the host: %v\n%s", err, out)
	}
	for _, target := range []string{client.String(), e.lan.RouterAddr().String(), "ff02::1%eth0"} {
		if out, err := nettest.Exec(ctx, res.Netns, "busybox", "ping", "-6", "-c1", "-W1", target); err == nil && !strings.Contains(target, "ff02") {
			t.Errorf("onion-only pod reached %s:\n%s", target, out)
		} else if strings.Contains(target, "ff02") && !onlyFromHost(string(out), e.cfg.ULAPrefix) {
			t.Errorf("onion-only pod got a multicast answer from the LAN:\n%s", out)
		}
	}
	if out, err := fetch(res.Netns, httpURL(client)); err == nil {
		t.Errorf("onion-only pod fetched from the LAN client: %s", out)
	}
	if out, err := fetch(e.lan.ClientNetns(), httpURL(res.ULA)); err == nil {
		t.Errorf("LAN client fetched from the onion-only pod: %s", out)
	}
}

// onlyFromHost reports whether every ping reply came from the host's veth end (link-local, or the
// host's ULA): the only neighbour an onion-only pod has.
func onlyFromHost(out string, ula netip.Prefix) bool {
	host := ula.Addr().Next().String()
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "bytes from") && !strings.Contains(line, "from fe80:") && !strings.Contains(line, "from "+host+":") {
			return false
		}
	}
	return true
}
