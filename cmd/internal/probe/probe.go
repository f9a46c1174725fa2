// Package probe checks that each app answers where a visitor would reach it: its own .onion
// through the managed tor's SOCKS port (a real circuit: descriptor, introduction, rendezvous),
// and its clearnet name over IPv6 and IPv4 (the name looked up at the zone's server, the
// address fetched from a LAN vantage point). Each probe is one HTTP GET of "/" with its status
// and latency (over HTTPS on the clearnet when the app's HTTPS front serves it, the
// certificate verified as a browser would); a failure names the hop that failed (tor's SOCKS5 extended errors say which
// one of the onion path). A Monitor probes every app on an interval, spread over it, and keeps
// a short history per app and path.
package probe

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// Path is how a probe reaches an app.
type Path string

// The paths of a probe.
const (
	PathOnion Path = "onion" // its .onion, through tor
	PathIPv6  Path = "ipv6"  // its DNS name's AAAA, from the LAN
	PathIPv4  Path = "ipv4"  // its DNS name's A, from the LAN
)

// Hops a probe can fail at.
const (
	HopTor          = "tor"          // tor's SOCKS port, or tor itself (no circuit, timeout)
	HopAddress      = "address"      // tor refuses the .onion address
	HopDescriptor   = "descriptor"   // the onion service's descriptor was not found (or invalid)
	HopClientAuth   = "client-auth"  // the service needs client authorization this tor lacks
	HopIntroduction = "introduction" // introduction to the service failed
	HopRendezvous   = "rendezvous"   // the rendezvous failed
	HopService      = "service"      // tor could not reach the service (no extended errors)
	HopTarget       = "target"       // the service could not reach the app behind it
	HopVantage      = "vantage"      // the LAN vantage point has no address of this family
	HopDNS          = "dns"          // the name has no record of this family at the zone's server
	HopConnect      = "connect"      // the app's address does not accept the connection
	HopTLS          = "tls"          // the TLS handshake failed, or the certificate does not verify
	HopHTTP         = "http"         // the app answered badly: no HTTP, or a 5xx status
	HopTimeout      = "timeout"      // the whole probe ran out of time
)

// Result is one probe of one path.
type Result struct {
	Path    Path          `json:"path"`
	At      time.Time     `json:"at"`
	OK      bool          `json:"ok"`
	Status  int           `json:"status,omitempty"`     // HTTP status, when the app answered
	Latency time.Duration `json:"latency_ns,omitempty"` // to the response's headers (circuit, lookup and connect included)
	Addr    string        `json:"addr,omitempty"`       // the address fetched (clearnet paths)
	TLS     bool          `json:"tls,omitempty"`        // fetched over HTTPS
	Hop     string        `json:"hop,omitempty"`        // where it failed
	Err     string        `json:"error,omitempty"`
}

// Target is one app to probe and where.
type Target struct {
	App   string
	Onion string // "<56 chars>.onion"; "" when the app has no onion service
	Name  string // its DNS name ("blog.box.example."); "" when it has none
	IPv6  bool   // probe the name's AAAA
	IPv4  bool   // probe the name's A
	Port  uint16 // the public port (default 80)
	// HTTPS: the clearnet paths fetch https://NAME/ on port 443 (the app's HTTPS front answers
	// plain HTTP with a redirect), verifying the certificate against Prober.Roots for NAME.
	HTTPS bool
	// OnionTarget is where the onion service forwards Port ("[fd00::5]:8080"): when tor reports
	// only a general failure, a connection to it tells whether the app behind the service is
	// down (hop target) or tor failed.
	OnionTarget string
}

// Paths lists the paths Probe takes for t.
func (t Target) Paths() []Path {
	var p []Path
	if t.Onion != "" {
		p = append(p, PathOnion)
	}
	if t.Name != "" && t.IPv6 {
		p = append(p, PathIPv6)
	}
	if t.Name != "" && t.IPv4 {
		p = append(p, PathIPv4)
	}
	return p
}

// Resolver looks a name up at the zone's server.
type Resolver interface {
	// Lookup returns the addresses of name of one family (AAAA when v6, else A).
	Lookup(ctx context.Context, name string, v6 bool) ([]netip.Addr, error)
}

// Dialer opens TCP connections from the LAN vantage point.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Prober probes targets. Its zero value probes nothing; fill what the paths need.
type Prober struct {
	// Socks is tor's SOCKS5 address ("127.0.0.1:9050"); "" skips onion paths.
	Socks string
	// Resolver finds the clearnet addresses; nil skips clearnet paths.
	Resolver Resolver
	// LAN dials the clearnet addresses; nil skips clearnet paths.
	LAN Dialer
	// OnionTimeout and ClearnetTimeout bound one probe (defaults 60 s and 10 s).
	OnionTimeout, ClearnetTimeout time.Duration
	// UserAgent is sent with every probe.
	UserAgent string
	// Roots verify the apps' certificates on HTTPS probes (nil: the system's roots).
	Roots *x509.CertPool
}

// Probe probes every path of t, one after the other, and returns one result per path.
func (p *Prober) Probe(ctx context.Context, t Target) []Result {
	var out []Result
	for _, path := range t.Paths() {
		out = append(out, p.ProbePath(ctx, t, path))
	}
	return out
}

// ProbePath probes one path of t.
func (p *Prober) ProbePath(ctx context.Context, t Target, path Path) Result {
	port := t.Port
	if port == 0 {
		port = 80
	}
	timeout := cmp(p.ClearnetTimeout, 10*time.Second)
	if path == PathOnion {
		timeout = cmp(p.OnionTimeout, 60*time.Second)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	res := Result{Path: path, At: start}
	var conn net.Conn
	var host string
	var err error
	switch path {
	case PathOnion:
		host = t.Onion
		if p.Socks == "" {
			err = &hopError{hop: HopTor, err: errors.New("no tor SOCKS port configured (tor.socks_port)")}
			break
		}
		conn, err = dialSOCKS(ctx, p.Socks, t.Onion, port)
		err = p.diagnose(ctx, t, err)
	case PathIPv6, PathIPv4:
		host = strings.TrimSuffix(t.Name, ".")
		if t.HTTPS {
			port, res.TLS = 443, true
		}
		conn, res.Addr, err = p.dialClearnet(ctx, t.Name, path == PathIPv6, port)
		if err == nil && t.HTTPS {
			conn, err = p.handshake(ctx, conn, host)
		}
	default:
		err = fmt.Errorf("probe: unknown path %q", path)
	}
	if err == nil {
		if port != 80 && !res.TLS {
			host = hostPort(host, port)
		}
		res.Status, err = get(ctx, conn, host, p.UserAgent)
		conn.Close()
	}
	res.Latency = time.Since(start)
	if err == nil && res.Status >= 500 {
		err = &hopError{hop: HopHTTP, err: fmt.Errorf("HTTP status %d", res.Status)}
	}
	if err != nil {
		res.Hop, res.Err = describe(ctx, err)
		return res
	}
	res.OK = true
	return res
}

func cmp(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// dialClearnet looks the name up and connects to its first address from the LAN vantage point.
func (p *Prober) dialClearnet(ctx context.Context, name string, v6 bool, port uint16) (net.Conn, string, error) {
	if p.Resolver == nil || p.LAN == nil {
		return nil, "", &hopError{hop: HopVantage, err: errors.New("clearnet probes are off (no LAN vantage point)")}
	}
	family := "A"
	if v6 {
		family = "AAAA"
	}
	addrs, err := p.Resolver.Lookup(ctx, name, v6)
	if err != nil {
		return nil, "", &hopError{hop: HopDNS, err: err}
	}
	if len(addrs) == 0 {
		return nil, "", &hopError{hop: HopDNS, err: fmt.Errorf("%s has no %s record", name, family)}
	}
	addr := netip.AddrPortFrom(addrs[0], port).String()
	network := "tcp4"
	if v6 {
		network = "tcp6"
	}
	c, err := p.LAN.DialContext(ctx, network, addr)
	if err != nil {
		var he *hopError
		if errors.As(err, &he) {
			return nil, addr, err
		}
		return nil, addr, &hopError{hop: HopConnect, err: err}
	}
	return c, addr, nil
}

// handshake starts TLS on conn for name, verifying its certificate against p.Roots.
func (p *Prober) handshake(ctx context.Context, conn net.Conn, name string) (net.Conn, error) {
	c := tls.Client(conn, &tls.Config{ServerName: name, RootCAs: p.Roots, NextProtos: []string{"http/1.1"},
		MinVersion: tls.VersionTLS12})
	if err := c.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, &hopError{hop: HopTLS, err: fmt.Errorf("https://%s/: %w", name, err)}
	}
	return c, nil
}

// diagnose tells, after tor's general failure (SOCKS5 0x01: what tor reports when the circuit
// to the service was built but the service ended the stream), whether the service could not
// reach the app: it connects to the onion service's target itself.
func (p *Prober) diagnose(ctx context.Context, t Target, err error) error {
	var se *SOCKSError
	if !errors.As(err, &se) || se.Code != 0x01 || t.OnionTarget == "" {
		return err
	}
	var d net.Dialer
	c, derr := d.DialContext(ctx, "tcp", t.OnionTarget)
	if derr != nil {
		return &hopError{hop: HopTarget, err: fmt.Errorf("the onion service's target %s does not accept connections: %w", t.OnionTarget, derr)}
	}
	c.Close()
	return err
}

// get sends GET / to the app over conn and reads the response's status (and a bounded body).
func get(ctx context.Context, conn net.Conn, host, userAgent string) (int, error) {
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/", nil)
	if err != nil {
		return 0, &hopError{hop: HopHTTP, err: err}
	}
	if userAgent != "" {
		req.Header.Set("User-Agent", userAgent)
	}
	req.Close = true
	if err := req.Write(conn); err != nil {
		return 0, &hopError{hop: HopHTTP, err: fmt.Errorf("sending the request: %w", err)}
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return 0, &hopError{hop: HopHTTP, err: fmt.Errorf("no HTTP response: %w", err)}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// hopError is a failure at a named hop.
type hopError struct {
	hop string
	err error
}

func (e *hopError) Error() string { return e.err.Error() }
func (e *hopError) Unwrap() error { return e.err }

// describe names the hop of err and says what happened.
func describe(ctx context.Context, err error) (hop, msg string) {
	hop = HopHTTP
	var he *hopError
	if errors.As(err, &he) {
		hop = he.hop
	}
	if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) || isTimeout(err) && ctx.Err() != nil {
		if hop == HopHTTP || hop == HopTor {
			hop = HopTimeout
		}
		return hop, "no answer in time: " + err.Error()
	}
	return hop, err.Error()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Health sums up an app's last results of each path: "healthy" when every one succeeded,
// "unreachable" when one failed, "unknown" before the first probe, and "" for an app that is
// not running (nothing to say).
func Health(running bool, latest []Result) string {
	switch {
	case !running:
		return ""
	case len(latest) == 0:
		return "unknown"
	}
	for _, r := range latest {
		if !r.OK {
			return "unreachable"
		}
	}
	return "healthy"
}

// AtHop marks err as a failure at hop (for Dialers and Resolvers that know where they failed).
func AtHop(hop string, err error) error { return &hopError{hop: hop, err: err} }
