package udpbatch

import (
	"bytes"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
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

func serve(t *testing.T, network, addr string) (*net.UDPConn, chan error) {
	t.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Skipf("%s %s: %v", network, addr, err)
	}
	c := pc.(*net.UDPConn)
	done := make(chan error, 1)
	go func() { done <- Serve(c, upper{}) }()
	return c, done
}

// TestServeBatches: many clients at once, over IPv4 and IPv6, each get
// their own answers back; a datagram the handler drops gets none, one too
// large is dropped, and closing the socket ends Serve with nil.
func TestServeBatches(t *testing.T) {
	for _, fam := range []struct{ network, addr string }{{"udp4", "127.0.0.1:0"}, {"udp6", "[::1]:0"}} {
		t.Run(fam.network, func(t *testing.T) {
			c, done := serve(t, fam.network, fam.addr)
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for client := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cc, err := net.DialUDP(fam.network, nil, c.LocalAddr().(*net.UDPAddr))
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

			cc, err := net.DialUDP(fam.network, nil, c.LocalAddr().(*net.UDPAddr))
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
			_ = c.Close()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Serve after Close: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Serve did not end after Close")
			}
		})
	}
}

// TestServeAllocatesNothing: serving datagrams allocates nothing per
// datagram (the client side here allocates nothing either).
func TestServeAllocatesNothing(t *testing.T) {
	c, _ := serve(t, "udp4", "127.0.0.1:0")
	defer c.Close()
	cc, err := net.DialUDP("udp4", nil, c.LocalAddr().(*net.UDPAddr))
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
