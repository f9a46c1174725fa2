package dnstest_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/dns/dnstest"
)

// TestNamedStartStop proves the harness: named answers for its zone on the
// chosen loopback port, signs a transfer with the generated key, refuses an
// unsigned one, and comes back on the same port after Stop and Start.
func TestNamedStartStop(t *testing.T) {
	n := dnstest.New(t, dnstest.NamedOptions{})
	dnstest.NeedDig(t)
	port := strconv.Itoa(n.Port())
	out := dnstest.DigT(t, "@127.0.0.1", "-p", port, "+norec", n.Zone(), "SOA")
	if !strings.Contains(out, "status: NOERROR") || !strings.Contains(out, "flags: qr aa") {
		t.Fatalf("SOA from named:\n%s", out)
	}
	out = dnstest.DigT(t, "@::1", "-p", port, "+norec", n.Zone(), "NS")
	if !strings.Contains(out, "ns1."+n.Zone()) {
		t.Fatalf("NS over IPv6 loopback:\n%s", out)
	}
	k := n.Key()
	out = dnstest.DigT(t, "@127.0.0.1", "-p", port, "-y", "hmac-sha256:"+k.Name+":"+k.Secret, n.Zone(), "AXFR")
	if !strings.Contains(out, "XFR size: 4 records") {
		t.Fatalf("signed AXFR:\n%s", out)
	}
	out = dnstest.DigT(t, "@127.0.0.1", "-p", port, n.Zone(), "AXFR")
	if !strings.Contains(out, "Transfer failed") {
		t.Fatalf("unsigned AXFR was not refused:\n%s", out)
	}

	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if n.Running() {
		t.Fatal("named still running after Stop")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := dnstest.Dig(ctx, "@127.0.0.1", "-p", port, "+tries=1", "+time=1", n.Zone(), "SOA"); err == nil {
		t.Fatal("named answered after Stop")
	}
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if s, err := n.Serial(ctx); err != nil || s != 1 {
		t.Fatalf("serial after restart = %d, %v", s, err)
	}
}
