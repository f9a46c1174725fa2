package dns_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/dns/dnstest"
)

// dialFrom opens TCP connections to addr from the loopback address src
// (127.0.0.0/8 is all on lo), closed at the end of the test.
func dialFrom(t *testing.T, src, addr string, n int, slow bool) []net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	var conns []net.Conn
	for i := 0; i < n; i++ {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("flood connection %d from %s: %v", i, src, err)
		}
		if slow { // a slowloris: one byte of the length prefix, then nothing
			_, _ = c.Write([]byte{0})
		}
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return conns
}

// TestServerTCPFlood: idle and trickling TCP connections, from one source,
// from many, or from the secondary's own address (a neighbour sharing it),
// do not lock others out of the 128 TCP slots: while they are held, the
// secondary (with its TSIG key) transfers the zone and other clients get
// answers over TCP.
func TestServerTCPFlood(t *testing.T) {
	dnstest.NeedDig(t)
	key := dnstest.RandomKey("xfr.box.example.", "hmac-sha256")
	for _, c := range []struct {
		name    string
		first   int // flooding addresses 127.0.0.FIRST, FIRST+1, ...
		sources int
		each    int // connections from each
	}{
		{"one source", 10, 1, 300},
		{"many sources", 10, 150, 1},
		{"the secondary's own address", 3, 1, 300},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, port := startServer(t, dns.ServerConfig{
				TSIGKeys:    []dns.TSIGKey{key},
				Secondaries: []dns.Secondary{{Addr: "127.0.0.3:9", KeyName: key.Name}},
			})
			mustSet(t, s, rec("blog.box.example", "2001:db8::1"), rec("wiki.box.example", "2001:db8::2"))
			addr := "127.0.0.1:" + port
			for i := 0; i < c.sources; i++ {
				src := fmt.Sprintf("127.0.0.%d", c.first+i)
				dialFrom(t, src, addr, c.each/2, false)
				dialFrom(t, src, addr, c.each-c.each/2, true)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := dnstest.Dig(ctx, "@127.0.0.1", "-p", port, "-b", "127.0.0.3", "+tries=1", "+time=3",
				"-y", "hmac-sha256:"+key.Name+":"+key.Secret, "box.example", "AXFR")
			if err != nil || !strings.Contains(out, "XFR size: 5 records") {
				t.Fatalf("AXFR from the secondary during the flood: %v\n%s", err, out)
			}
			for _, src := range []string{"127.0.0.4", "127.0.0.5"} {
				out, err := dnstest.Dig(ctx, "@127.0.0.1", "-p", port, "-b", src, "+tcp", "+tries=1", "+time=3", "+short", "blog.box.example", "AAAA")
				if err != nil || strings.TrimSpace(out) != "2001:db8::1" {
					t.Fatalf("TCP query from %s during the flood: %v %q", src, err, out)
				}
			}
		})
	}
}

// TestServerTCPIdleTimeout: a connection that never sends a query is
// closed after a few seconds, not held for long.
func TestServerTCPIdleTimeout(t *testing.T) {
	_, port := startServer(t, dns.ServerConfig{})
	c := dialFrom(t, "127.0.0.20", "127.0.0.1:"+port, 1, false)[0]
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(30 * time.Second))
	var b [1]byte
	if _, err := c.Read(b[:]); err == nil {
		t.Fatal("the server sent something to a silent connection")
	}
	if d := time.Since(start); d > 9*time.Second {
		t.Fatalf("a silent connection was held %v", d)
	}
}
