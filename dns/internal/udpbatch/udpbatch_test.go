package udpbatch

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onionpod/onionpod/dns/internal/multihome"
)

// upper answers a datagram with its bytes in upper case (in out), and
// drops datagrams that start with "drop".
type upper struct{}

func (upper) Answer(req, out []byte) []byte {
	if bytes.HasPrefix(req, []byte("drop")) {
		return nil
	}
	out = append(out[:0], req...)
	for i, c := range out {
		if c >= 'a' && c <= 'z' {
			out[i] = c - 'a' + 'A'
		}
	}
	return out
}

func serve(t *testing.T, addr string, n int) *Group {
	t.Helper()
	g, err := Listen(addr, n)
	if err != nil {
		t.Skipf("%s: %v", addr, err)
	}
	g.Serve(func() Handler { return upper{} })
	t.Cleanup(func() { _ = g.Close() })
	return g
}

// TestServeBatches: many clients at once, over IPv4 and IPv6, with the
// sockets steered by CPU or by the kernel's hash, each get their own
// answers back; a datagram the handler drops gets none, one too large is
// dropped, and Close ends the serving threads.
func TestServeBatches(t *testing.T) {
	for _, fam := range []struct {
		network, addr string
		n             int
	}{{"udp4", "127.0.0.1:0", 0}, {"udp6", "[::1]:0", 0}, {"udp4", "127.0.0.1:0", 3}, {"udp", "[::]:0", 0}} {
		t.Run(fmt.Sprintf("%s %s %d sockets", fam.network, fam.addr, fam.n), func(t *testing.T) {
			g := serve(t, fam.addr, fam.n)
			to := g.Addr()
			if fam.network == "udp" {
				to = &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: to.Port} // IPv4 on a dual-stack socket
				fam.network = "udp4"
			}
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for client := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cc, err := net.DialUDP(fam.network, nil, to)
					if err != nil {
						errs <- err
						return
					}
					defer cc.Close()
					buf := make([]byte, 256)
					for i := range 200 {
						msg := fmt.Sprintf("client %d message %d", client, i)
						if _, err := cc.Write([]byte(msg)); err != nil {
							errs <- err
							return
						}
						_ = cc.SetReadDeadline(time.Now().Add(5 * time.Second))
						n, err := cc.Read(buf)
						if err != nil || string(buf[:n]) != string(bytes.ToUpper([]byte(msg))) {
							errs <- fmt.Errorf("client %d message %d: %q %v", client, i, buf[:n], err)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}

			cc, err := net.DialUDP(fam.network, nil, to)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			_, _ = cc.Write([]byte("drop me"))
			_, _ = cc.Write(make([]byte, MaxRequest+1))
			_, _ = cc.Write([]byte("last"))
			buf := make([]byte, MaxRequest+10)
			_ = cc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := cc.Read(buf); err != nil || string(buf[:n]) != "LAST" {
				t.Fatalf("after a dropped and an oversized datagram: %q %v", buf[:n], err)
			}
			closed := make(chan struct{})
			go func() { _ = g.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not end the serving threads")
			}
			_, _ = cc.Write([]byte("after close"))
			_ = cc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if n, err := cc.Read(buf); err == nil {
				t.Fatalf("answer after Close: %q", buf[:n])
			}
		})
	}
}

// TestServeAllocatesNothing: serving datagrams allocates nothing per
// datagram, on a socket bound to one address and on wildcard ones (which
// answer from each datagram's destination), IPv4 on a dual-stack socket
// too. The client side here allocates nothing either.
func TestServeAllocatesNothing(t *testing.T) {
	for _, c := range []struct{ listen, to string }{
		{"127.0.0.1:0", "127.0.0.1"}, {"0.0.0.0:0", "127.0.0.1"}, {"[::]:0", "::1"}, {"[::]:0", "127.0.0.1"},
	} {
		t.Run(c.listen+" to "+c.to, func(t *testing.T) {
			g := serve(t, c.listen, 0)
			serveAllocatesNothing(t, &net.UDPAddr{IP: net.ParseIP(c.to), Port: g.Addr().Port})
		})
	}
}

func serveAllocatesNothing(t *testing.T, to *net.UDPAddr) {
	cc, err := net.DialUDP("udp", nil, to)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_ = cc.SetReadDeadline(time.Now().Add(time.Minute))
	msg, buf := []byte("query"), make([]byte, 64)
	roundTrip := func() {
		if _, err := cc.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := cc.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	for range 100 {
		roundTrip()
	}
	const n = 2000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		roundTrip()
	}
	runtime.ReadMemStats(&after)
	if per := float64(after.Mallocs-before.Mallocs) / n; per > 0.05 {
		t.Fatalf("%.2f allocations per datagram", per)
	}
}

// TestAnswersFromQueriedAddress: on a multi-homed host (two global IPv6,
// two link-local IPv6 and two IPv4 addresses on one interface), a group
// bound to the wildcard address answers every query from the address it
// was sent to, over IPv6, IPv4 on an IPv4 socket and IPv4 on a dual-stack
// socket: a client (dig, a resolver, a connected socket) drops an answer
// from any other address. A group bound to one address answers from it.
func TestAnswersFromQueriedAddress(t *testing.T) {
	mh := multihome.New(t)
	v6 := append(mh.V6[:], mh.LinkLocal[:]...)
	for _, c := range []struct {
		listen string
		n      int
		to     []netip.Addr
	}{
		{"[::]:0", 0, append(v6, mh.V4[:]...)},
		{":0", 3, append(v6, mh.V4[:]...)},
		{"0.0.0.0:0", 0, mh.V4[:]},
		{"[2001:db8:1::99]:0", 0, mh.V6[1:]},
		{"192.0.2.99:0", 0, mh.V4[1:]},
	} {
		t.Run(fmt.Sprintf("%s %d sockets", c.listen, c.n), func(t *testing.T) {
			var g *Group
			err := mh.Do(mh.Server, func() (err error) {
				g, err = Listen(c.listen, c.n)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			g.Serve(func() Handler { return upper{} })
			t.Cleanup(func() { _ = g.Close() })
			for _, to := range c.to {
				for i := range 3 { // several datagrams: every socket of the group may get one
					if err := askFrom(mh, netip.AddrPortFrom(to, uint16(g.Addr().Port)), i); err != nil {
						t.Error(err)
						break
					}
				}
			}
		})
	}
}

// askFrom sends a datagram from the client namespace to addr and checks
// that the answer comes back from addr.
func askFrom(mh *multihome.Net, to netip.AddrPort, i int) error {
	var conn *net.UDPConn
	err := mh.Do(mh.Client, func() (err error) {
		network := "udp6"
		if to.Addr().Is4() {
			network = "udp4"
		}
		conn, err = net.ListenUDP(network, nil)
		return err
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	msg := fmt.Sprintf("to %s #%d", to, i)
	if _, err := conn.WriteToUDPAddrPort([]byte(msg), to); err != nil {
		return fmt.Errorf("send to %s: %w", to, err)
	}
	buf := make([]byte, 512)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		return fmt.Errorf("query to %s: no answer: %w", to, err)
	}
	// The zone of a link-local source is named in this thread's namespace:
	// compare without it.
	src := from.Addr().Unmap().WithZone("")
	if src != to.Addr().WithZone("") || from.Port() != to.Port() || string(buf[:n]) != strings.ToUpper(msg) {
		return fmt.Errorf("query to %s: answer %q from %s: a client drops an answer from another address", to, buf[:n], src)
	}
	return nil
}
