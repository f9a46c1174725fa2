package onion

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/onionpod/onionpod/onion/oniontest"
)

// torNet is the binary's private Tor network (15-35 s to start): started on first use,
// closed by TestMain.
var torNet oniontest.SharedNetwork

func TestMain(m *testing.M) {
	code := m.Run()
	torNet.Close()
	os.Exit(code)
}

// socksConnect opens a stream to host:port through a SOCKS5 proxy (tor), returning tor's
// reply code on failure (0xF4: onion service missing client authorization).
func socksConnect(ctx context.Context, proxy, host string, port int) (net.Conn, byte, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", proxy)
	if err != nil {
		return nil, 0, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	req := []byte{5, 1, 0}
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, 0, err
	}
	r := bufio.NewReader(c)
	var hello [2]byte
	if _, err := io.ReadFull(r, hello[:]); err != nil || hello != [2]byte{5, 0} {
		c.Close()
		return nil, 0, fmt.Errorf("socks hello: %v %v", hello, err)
	}
	req = append([]byte{5, 1, 0, 3, byte(len(host))}, host...)
	req = binary.BigEndian.AppendUint16(req, uint16(port))
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, 0, err
	}
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		c.Close()
		return nil, 0, fmt.Errorf("socks reply: %w", err)
	}
	if head[1] != 0 {
		c.Close()
		return nil, head[1], fmt.Errorf("socks reply code 0x%02x", head[1])
	}
	skip := map[byte]int{1: 4 + 2, 4: 16 + 2}[head[3]]
	if head[3] == 3 {
		n, _ := r.ReadByte()
		skip = int(n) + 2
	}
	if _, err := io.CopyN(io.Discard, r, int64(skip)); err != nil {
		c.Close()
		return nil, 0, err
	}
	c.SetDeadline(time.Time{})
	return &bufConn{Conn: c, r: r}, 0, nil
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// fetch GETs http://host:port/ through tor's SOCKS port, retrying transient failures
// until ctx ends; a SOCKS reply code in stopOn ends it at once.
func fetch(ctx context.Context, socks, host string, port int, stopOn byte) (string, byte, error) {
	var lastErr error
	var lastCode byte
	for ctx.Err() == nil {
		attempt, cancel := context.WithTimeout(ctx, 30*time.Second)
		c, code, err := socksConnect(attempt, socks, host, port)
		if err == nil {
			req, _ := http.NewRequest("GET", "http://"+host+":"+strconv.Itoa(port)+"/", nil)
			req.Write(c)
			var resp *http.Response
			resp, err = http.ReadResponse(bufio.NewReader(c), req)
			if err == nil {
				body, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				c.Close()
				cancel()
				return string(body), 0, rerr
			}
			c.Close()
		}
		cancel()
		lastErr, lastCode = err, code
		if code != 0 && code == stopOn {
			return "", code, err
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return "", lastCode, fmt.Errorf("fetch %s:%d: %w (last: %v)", host, port, ctx.Err(), lastErr)
}

func serveHTTP(t *testing.T, network, addr, body string) int {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// TestPrivateNetworkFetchAndClientAuth hosts onion services on a tor started from
// ManagedTorrc joined to the private network, and fetches them through the network's
// client: an open service (IPv4 and IPv6 targets) and a client-auth service, which only a
// client holding the key printed by AddClient can reach.
func TestPrivateNetworkFetchAndClientAuth(t *testing.T) {
	network := torNet.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	start := time.Now()

	// The service host: onionpod's managed torrc plus the network's join lines.
	hostDir := oniontest.TempDir(t)
	opts := TorrcOptions{
		DataDir:       filepath.Join(hostDir, "data"),
		ControlSocket: filepath.Join(hostDir, "ctl", "control.sock"),
		Extra:         network.JoinTorrc(),
	}
	if err := PrepareManagedDirs(opts); err != nil {
		t.Fatal(err)
	}
	torrc, err := ManagedTorrc(opts)
	if err != nil {
		t.Fatal(err)
	}
	host, err := oniontest.Start(ctx, oniontest.Options{Dir: hostDir, Torrc: torrc, ControlSocket: opts.ControlSocket})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()

	ks := newStore(t)
	web, _, _ := ks.Ensure("web")
	secret, _, _ := ks.Ensure("secret")
	cred, err := ks.AddClient("secret", "phone")
	if err != nil {
		t.Fatal(err)
	}
	clients, _ := ks.Clients("secret")
	port4 := serveHTTP(t, "tcp", "127.0.0.1:0", "hello over v4")
	port6 := serveHTTP(t, "tcp6", "[::1]:0", "hello over v6")
	portS := serveHTTP(t, "tcp", "127.0.0.1:0", "secret page")

	m := startManager(t, host, true)
	svcs := []Service{
		{App: "web", Key: web, Ports: []Port{{80, fmt.Sprintf("127.0.0.1:%d", port4)}, {81, fmt.Sprintf("[::1]:%d", port6)}}},
		{App: "secret", Key: secret, Ports: []Port{{80, fmt.Sprintf("127.0.0.1:%d", portS)}}, Clients: clients},
	}
	if err := m.Set(ctx, svcs); err != nil {
		t.Fatal(err)
	}
	// A client holding the key, started now so it bootstraps while descriptors upload.
	authClient, err := network.StartClient(ctx, oniontest.TempDir(t), []string{cred.AuthPrivate()})
	if err != nil {
		t.Fatal(err)
	}
	defer authClient.Close()
	if err := network.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("network ready after %v", time.Since(start))
	for {
		st := m.Status()
		if st["web"].Uploaded && st["secret"].Uploaded {
			break
		}
		select {
		case <-m.Changes():
		case <-time.After(time.Second):
		case <-ctx.Done():
			t.Fatalf("descriptors not uploaded: %+v%s", st, host.LogTail())
		}
	}
	t.Logf("descriptors uploaded after %v", time.Since(start))

	var wg sync.WaitGroup
	check := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				t.Errorf("%s: %v", name, err)
			} else {
				t.Logf("%s: ok after %v", name, time.Since(start))
			}
		}()
	}
	expect := func(socks, addr string, port int, want string) func() error {
		return func() error {
			body, _, err := fetch(ctx, socks, addr, port, 0)
			if err != nil {
				return err
			}
			if body != want {
				return fmt.Errorf("body %q, want %q", body, want)
			}
			return nil
		}
	}
	check("open service, IPv4 target", expect(network.SocksAddr(), web.Address(), 80, "hello over v4"))
	check("open service, IPv6 target", expect(network.SocksAddr(), web.Address(), 81, "hello over v6"))
	check("client-auth service without the key", func() error {
		_, code, err := fetch(ctx, network.SocksAddr(), secret.Address(), 80, 0xF4)
		if code != 0xF4 {
			return fmt.Errorf("got %v (code 0x%02x), want SOCKS 0xF4 (missing client authorization)", err, code)
		}
		return nil
	})
	check("client-auth service with the key", func() error {
		if err := authClient.WaitBootstrapped(ctx); err != nil {
			return err
		}
		socks, err := authClient.SocksAddr(ctx)
		if err != nil {
			return err
		}
		return expect(socks, secret.Address(), 80, "secret page")()
	})
	wg.Wait()
	t.Logf("checks done after %v", time.Since(start))
}
