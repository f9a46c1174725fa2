package front

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Route is where the edge sends one host name's visitors.
type Route struct {
	// TLS receives :443 (the ClientHello is passed on untouched); HTTP receives :80.
	// An invalid address: that port is not routed for this name.
	TLS, HTTP netip.AddrPort
	// Proxy sends a PROXY protocol v2 header first (the backend is a front, which trusts it from
	// the host only). A backend that is the app itself gets the bare connection.
	Proxy bool
}

// Routes maps lowercase host names (no final dot) to their routes.
type Routes map[string]Route

// Router is the box's edge on its IPv4 address: it routes :443 by the TLS server name and :80 by
// the Host header, without terminating TLS. SetRoutes swaps the table atomically; connections
// already spliced keep going.
type Router struct {
	routes atomic.Pointer[Routes]
	log    *slog.Logger
	dialer net.Dialer

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// NewRouter returns a router with no routes (log may be nil).
func NewRouter(log *slog.Logger) *Router {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := &Router{log: log, conns: map[net.Conn]struct{}{}, dialer: net.Dialer{Timeout: 5 * time.Second}}
	r.routes.Store(&Routes{})
	return r
}

// SetRoutes replaces the routing table.
func (r *Router) SetRoutes(routes Routes) {
	clean := make(Routes, len(routes))
	for name, rt := range routes {
		clean[strings.ToLower(strings.TrimSuffix(name, "."))] = rt
	}
	r.routes.Store(&clean)
}

func (r *Router) route(host string) (Route, bool) {
	rt, ok := (*r.routes.Load())[strings.ToLower(strings.TrimSuffix(host, "."))]
	return rt, ok
}

// ServeTLS routes the connections of ln (the box's :443) until ln is closed.
func (r *Router) ServeTLS(ln net.Listener) error {
	return r.serve(ln, r.handleTLS)
}

// ServeHTTP routes the connections of ln (the box's :80) until ln is closed.
func (r *Router) ServeHTTP(ln net.Listener) error {
	return r.serve(ln, r.handleHTTP)
}

func (r *Router) serve(ln net.Listener, handle func(net.Conn)) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		go handle(c)
	}
}

// Close closes every connection the router is splicing (the listeners are the caller's).
func (r *Router) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.conns {
		c.Close()
	}
}

func (r *Router) track(c net.Conn, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if on {
		r.conns[c] = struct{}{}
	} else {
		delete(r.conns, c)
	}
}

// handleTLS reads the ClientHello (recording every byte), finds the server name, and splices the
// recorded bytes and the rest of the connection to the name's backend.
func (r *Router) handleTLS(c net.Conn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(headerTimeout))
	name, seen, err := peekServerName(c)
	c.SetReadDeadline(time.Time{})
	if err != nil || name == "" {
		r.log.Debug("edge: no server name", "from", c.RemoteAddr(), "err", err)
		return // a visitor without SNI cannot be routed: the handshake just ends
	}
	rt, ok := r.route(name)
	if !ok || !rt.TLS.IsValid() {
		r.log.Debug("edge: unknown server name", "name", name)
		return
	}
	r.splice(c, rt.TLS, rt.Proxy, seen)
}

// handleHTTP reads the first request's header, finds its Host, and splices it and the rest of the
// connection to the host's backend. An unknown host gets 404.
func (r *Router) handleHTTP(c net.Conn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(headerTimeout))
	var seen bytes.Buffer
	br := bufio.NewReader(io.TeeReader(io.LimitReader(c, 64<<10), &seen))
	req, err := http.ReadRequest(br)
	c.SetReadDeadline(time.Time{})
	if err != nil {
		return
	}
	host := req.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	rt, ok := r.route(host)
	if !ok || !rt.HTTP.IsValid() {
		io.WriteString(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return
	}
	r.splice(c, rt.HTTP, rt.Proxy, seen.Bytes())
}

// splice connects to backend, sends the PROXY header (if asked) and what was already read, then
// copies both ways until both sides are done.
func (r *Router) splice(c net.Conn, backend netip.AddrPort, proxy bool, seen []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	b, err := r.dialer.DialContext(ctx, "tcp", backend.String())
	cancel()
	if err != nil {
		r.log.Warn("edge: backend unreachable", "backend", backend, "err", err)
		return
	}
	defer b.Close()
	r.track(c, true)
	r.track(b, true)
	defer r.track(c, false)
	defer r.track(b, false)
	var head []byte
	if proxy {
		src, err1 := netip.ParseAddrPort(c.RemoteAddr().String())
		dst, err2 := netip.ParseAddrPort(c.LocalAddr().String())
		if err1 != nil || err2 != nil {
			return
		}
		head = proxyHeader(src, dst)
	}
	if _, err := b.Write(append(head, seen...)); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(b, c)
		closeWrite(b)
		close(done)
	}()
	io.Copy(c, b)
	closeWrite(c)
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// errPeeked stops the handshake once the ClientHello is read.
var errPeeked = errors.New("client hello read")

// peekServerName reads a TLS ClientHello from c with crypto/tls's own parser (a handshake that is
// stopped as soon as the hello is known, on a connection that records what it reads and writes
// nothing) and returns the server name and the bytes read.
func peekServerName(c net.Conn) (string, []byte, error) {
	rec := &recordingConn{r: c}
	var name string
	err := tls.Server(rec, &tls.Config{
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			name = hello.ServerName
			return nil, errPeeked
		},
	}).Handshake()
	if name == "" && !errors.Is(err, errPeeked) {
		return "", rec.seen.Bytes(), fmt.Errorf("edge: read client hello: %w", err)
	}
	return name, rec.seen.Bytes(), nil
}

// recordingConn is a read-only net.Conn that records what it reads; writes are dropped (so the
// stopped handshake sends no alert to the visitor).
type recordingConn struct {
	r    io.Reader
	seen bytes.Buffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	if c.seen.Len() > 64<<10 {
		return 0, errors.New("client hello too long")
	}
	n, err := c.r.Read(p)
	c.seen.Write(p[:n])
	return n, err
}

func (c *recordingConn) Write(p []byte) (int, error)        { return len(p), nil }
func (c *recordingConn) Close() error                       { return nil }
func (c *recordingConn) LocalAddr() net.Addr                { return &net.TCPAddr{} }
func (c *recordingConn) RemoteAddr() net.Addr               { return &net.TCPAddr{} }
func (c *recordingConn) SetDeadline(t time.Time) error      { return nil }
func (c *recordingConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *recordingConn) SetWriteDeadline(t time.Time) error { return nil }
