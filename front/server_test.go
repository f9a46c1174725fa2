package front

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

const (
	testHost  = "blog.box.example"
	testOnion = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvwx.onion"
)

// seen is what the test app reports about a request.
type seen struct {
	Path, Host, XFF, Proto, Forwarded string
}

// startApp runs the app a front proxies to, on loopback IPv4 only (the front tries IPv6 first):
// it reports what it saw, streams on /stream and echoes WebSocket messages on /ws.
func startApp(t testing.TB) uint16 {
	t.Helper()
	ln := listenIPv4Only(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(seen{Path: r.URL.RequestURI(), Host: r.Host, XFF: r.Header.Get("X-Forwarded-For"),
			Proto: r.Header.Get("X-Forwarded-Proto"), Forwarded: r.Header.Get("Forwarded")})
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		for i := range 3 {
			fmt.Fprintf(w, "chunk %d\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(300 * time.Millisecond)
		}
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d", n)
	})
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) { io.Copy(c, c) }))
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

type testFront struct {
	srv          *Server
	certs        *Certs
	tlsAddr      string
	plainAddr    string
	tlsLn, plain net.Listener
}

func startFront(t testing.TB, cfg Config) *testFront {
	t.Helper()
	if cfg.Certs == nil {
		cfg.Certs = &Certs{}
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &testFront{srv: srv, certs: cfg.Certs, tlsLn: listen(t, "[::1]:0"), plain: listen(t, "[::1]:0")}
	f.tlsAddr, f.plainAddr = f.tlsLn.Addr().String(), f.plain.Addr().String()
	go srv.ServeTLS(f.tlsLn)
	go srv.ServePlain(f.plain)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return f
}

func get(t testing.TB, c *http.Client, url string) (*http.Response, seen) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var s seen
	body, _ := io.ReadAll(resp.Body)
	json.Unmarshal(body, &s)
	return resp, s
}

// TestFrontHTTPS: the front terminates TLS with the app's certificate (HTTP/1.1 and HTTP/2),
// passes the visitor's address and the Host on, and adds Onion-Location with the same path.
func TestFrontHTTPS(t *testing.T) {
	ca := newTestCA(t)
	port := startApp(t)
	certs := &Certs{}
	if err := certs.Load(ca.bundle(t, testHost, 2, time.Hour)); err != nil {
		t.Fatal(err)
	}
	f := startFront(t, Config{Host: testHost, Target: port, Onion: testOnion, Certs: certs})
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%t", h2), func(t *testing.T) {
			resp, s := get(t, ca.client(f.tlsAddr, h2), "https://"+testHost+"/a/b?c=d")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if wantProto := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != wantProto {
				t.Errorf("protocol %s, want HTTP/%d", resp.Proto, wantProto)
			}
			if got, want := resp.Header.Get("Onion-Location"), "http://"+testOnion+"/a/b?c=d"; got != want {
				t.Errorf("Onion-Location %q, want %q", got, want)
			}
			want := seen{Path: "/a/b?c=d", Host: testHost, XFF: "::1", Proto: "https",
				Forwarded: `for="[::1]";proto=https;host="` + testHost + `"`}
			if s != want {
				t.Errorf("the app saw %+v, want %+v", s, want)
			}
		})
	}
}

// TestFrontPlainHTTP: plain HTTP is redirected to https:// (same path) while a valid certificate
// is loaded; without one (or expired), the app answers plain HTTP itself.
func TestFrontPlainHTTP(t *testing.T) {
	ca := newTestCA(t)
	port := startApp(t)
	f := startFront(t, Config{Host: testHost, Target: port})
	c := ca.client(f.plainAddr, false)
	c.Transport.(*http.Transport).TLSClientConfig = nil
	if resp, s := get(t, c, "http://"+testHost+"/x?y=1"); resp.StatusCode != 200 || s.Proto != "http" {
		t.Errorf("no certificate: status %d, app saw %+v; want the app over plain HTTP", resp.StatusCode, s)
	}
	if err := f.certs.Load(ca.bundle(t, testHost, 2, -time.Second)); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, c, "http://"+testHost+"/x"); resp.StatusCode != 200 {
		t.Errorf("expired certificate: status %d, want the app (200)", resp.StatusCode)
	}
	if err := f.certs.Load(ca.bundle(t, testHost, 3, time.Hour)); err != nil {
		t.Fatal(err)
	}
	resp, _ := get(t, c, "http://other.example/x?y=1")
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "https://"+testHost+"/x?y=1" {
		t.Errorf("valid certificate: status %d Location %q, want 301 to https://%s/x?y=1", resp.StatusCode, resp.Header.Get("Location"), testHost)
	}
	if resp.Header.Get("Onion-Location") != "" {
		t.Error("a redirect carries Onion-Location: only HTTPS responses do")
	}
}

// TestFrontStreamsAndUpgrades: bodies stream both ways (the first chunk arrives before the app
// is done), and a WebSocket works through the front.
func TestFrontStreamsAndUpgrades(t *testing.T) {
	ca := newTestCA(t)
	port := startApp(t)
	certs := &Certs{}
	certs.Load(ca.bundle(t, testHost, 2, time.Hour))
	f := startFront(t, Config{Host: testHost, Target: port, Certs: certs})

	start := time.Now()
	resp, err := ca.client(f.tlsAddr, true).Get("https://" + testHost + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	line := make([]byte, len("chunk 0\n"))
	if _, err := io.ReadFull(resp.Body, line); err != nil || string(line) != "chunk 0\n" {
		t.Fatalf("first chunk %q %v", line, err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Logf("first chunk after %v: the app sleeps 300 ms between chunks", d)
	}
	rest, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(rest) != "chunk 1\nchunk 2\n" {
		t.Errorf("rest of the stream %q", rest)
	}

	up, err := ca.client(f.tlsAddr, true).Post("https://"+testHost+"/upload", "application/octet-stream",
		io.LimitReader(zeros{}, 8<<20))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.ReadAll(up.Body)
	up.Body.Close()
	if string(n) != fmt.Sprint(8<<20) {
		t.Errorf("upload: the app read %s bytes", n)
	}

	wsCfg, _ := websocket.NewConfig("wss://"+testHost+"/ws", "https://"+testHost)
	wsCfg.TlsConfig = &tls.Config{RootCAs: ca.pool, ServerName: testHost}
	raw, err := tls.Dial("tcp", f.tlsAddr, wsCfg.TlsConfig)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(wsCfg, raw)
	if err != nil {
		t.Fatalf("websocket through the front: %v", err)
	}
	defer ws.Close()
	for _, msg := range []string{"hello", "over the front"} {
		websocket.Message.Send(ws, msg)
		var echo string
		if err := websocket.Message.Receive(ws, &echo); err != nil || echo != msg {
			t.Errorf("echo %q %v, want %q", echo, err, msg)
		}
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestFrontCertificateSwap: a renewed certificate is served from the next handshake on, while
// clients keep fetching without a single failure, and a connection opened before keeps working.
func TestFrontCertificateSwap(t *testing.T) {
	ca := newTestCA(t)
	port := startApp(t)
	certs := &Certs{}
	certs.Load(ca.bundle(t, testHost, 2, time.Hour))
	f := startFront(t, Config{Host: testHost, Target: port, Certs: certs})
	kept := ca.client(f.tlsAddr, true)
	get(t, kept, "https://"+testHost+"/before")

	var fetched, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := ca.client(f.tlsAddr, false)
			c.Transport.(*http.Transport).DisableKeepAlives = true // a handshake per request
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get("https://" + testHost + "/")
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
					t.Logf("failed: %v", err)
				} else {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				fetched.Add(1)
			}
		}()
	}
	for serial := int64(3); serial < 13; serial++ {
		time.Sleep(20 * time.Millisecond)
		if err := certs.Load(ca.bundle(t, testHost, serial, time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d requests while the certificate changed 10 times", fetched.Load())
	if failed.Load() > 0 {
		t.Errorf("%d of %d requests failed", failed.Load(), fetched.Load())
	}
	c := ca.client(f.tlsAddr, false)
	c.Transport.(*http.Transport).DisableKeepAlives = true
	resp, _ := get(t, c, "https://"+testHost+"/after")
	if got := resp.TLS.PeerCertificates[0].SerialNumber.Int64(); got != 12 {
		t.Errorf("a new handshake got serial %d, want 12", got)
	}
	if resp, _ := get(t, kept, "https://"+testHost+"/kept"); resp.TLS.PeerCertificates[0].SerialNumber.Int64() != 2 {
		t.Error("the connection opened before the swap was not kept")
	}
	if err := certs.Load([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")); err == nil {
		t.Error("a broken bundle was loaded")
	}
	if certs.Current().Leaf.SerialNumber.Int64() != 12 {
		t.Error("a broken bundle replaced the good certificate")
	}
}

// TestEdgeRoutesToFronts: the edge routes :443 by server name (no termination: the visitor
// verifies the front's certificate) and :80 by Host, and the front learns the visitor's address
// from the PROXY header, which it accepts from the edge's address only and requires from it.
func TestEdgeRoutesToFronts(t *testing.T) {
	ca := newTestCA(t)
	port := startApp(t)
	certs := &Certs{}
	certs.Load(ca.bundle(t, testHost, 2, time.Hour))
	f := startFront(t, Config{Host: testHost, Target: port, Certs: certs, EdgeAddr: netip.MustParseAddr("::1")})

	r := NewRouter(nil)
	r.SetRoutes(Routes{testHost + ".": {TLS: netip.MustParseAddrPort(f.tlsAddr), HTTP: netip.MustParseAddrPort(f.plainAddr), Proxy: true}})
	tlsLn, plainLn := listen(t, "127.0.0.1:0"), listen(t, "127.0.0.1:0")
	go r.ServeTLS(tlsLn)
	go r.ServeHTTP(plainLn)
	t.Cleanup(r.Close)

	resp, s := get(t, ca.client(tlsLn.Addr().String(), true), "https://"+strings.ToUpper(testHost)+"/v4")
	if resp.StatusCode != 200 || s.XFF != "127.0.0.1" || s.Path != "/v4" {
		t.Errorf("through the edge: status %d, the app saw %+v; want 200 from 127.0.0.1", resp.StatusCode, s)
	}
	plain := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{DialContext: func(ctx context.Context, n, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, n, plainLn.Addr().String())
		}}}
	resp, _ = get(t, plain, "http://"+testHost+"/p")
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "https://"+testHost+"/p" {
		t.Errorf(":80 through the edge: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := get(t, plain, "http://unknown.example/"); resp.StatusCode != 404 {
		t.Errorf("unknown host: %d, want 404", resp.StatusCode)
	}
	if _, err := tls.Dial("tcp", tlsLn.Addr().String(), &tls.Config{RootCAs: ca.pool, ServerName: "unknown.example"}); err == nil {
		t.Error("an unknown server name was routed")
	}
	// From the edge's address without a PROXY header: refused.
	if _, err := tls.Dial("tcp", f.tlsAddr, &tls.Config{RootCAs: ca.pool, ServerName: testHost}); err == nil {
		t.Error("the front took a connection from the edge's address without a PROXY header")
	}
}
