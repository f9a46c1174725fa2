package front

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/onionpod/onionpod/internal/names"
)

// The front's ports in the pod's namespace. The pod's firewall redirects the LAN's :443 to
// TLSPort and :80 to HTTPPort; the edge connects to them directly over the ULA. They are high and
// unusual so that an app keeps every ordinary port for itself (an app publishing one of them gets
// no front).
const (
	TLSPort  uint16 = 44343
	HTTPPort uint16 = 44380
)

// Config is one app's front.
type Config struct {
	// Host is the app's name on the clearnet ("blog.box.example"): where plain HTTP is
	// redirected, whatever Host the visitor sent.
	Host string
	// Target is the app's port in the pod: the front proxies to localhost:Target.
	Target uint16
	// Onion is the app's .onion name ("xyz...xyz.onion"); "" sends no Onion-Location.
	Onion string
	// EdgeAddr is the host's address on the ULA: connections from it start with a PROXY protocol
	// header (the edge's), and no other connection may send one. Invalid: none is trusted.
	EdgeAddr netip.Addr
	// Certs is the certificate served; it may be empty at start (TLS handshakes then fail and
	// plain HTTP is proxied instead of redirected).
	Certs *Certs
	// Log gets one line per failed proxy attempt (nil: discarded).
	Log *slog.Logger
}

// Server is one app's front.
type Server struct {
	cfg      Config
	tls      *http.Server
	plain    *http.Server
	proxy    *httputil.ReverseProxy
	location bool
}

// headerTimeout bounds how long a PROXY header, a TLS handshake and request headers may take.
const headerTimeout = 10 * time.Second

// New checks cfg and prepares the front's two HTTP servers.
func New(cfg Config) (*Server, error) {
	if !names.IsHostname(strings.TrimSuffix(cfg.Host, ".")) {
		return nil, fmt.Errorf("front: host %q is not a host name", cfg.Host)
	}
	cfg.Host = strings.TrimSuffix(cfg.Host, ".")
	if cfg.Target == 0 {
		return nil, errors.New("front: no target port")
	}
	if cfg.Onion != "" && !validOnion(cfg.Onion) {
		return nil, errors.New("front: onion: not a v3 .onion name")
	}
	if cfg.Certs == nil {
		cfg.Certs = &Certs{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{cfg: cfg, location: cfg.Onion != ""}
	s.proxy = s.newProxy()
	tlsConfig := &tls.Config{
		GetCertificate: cfg.Certs.GetCertificate,
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
	}
	errLog := slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug) // handshake noise from scanners
	s.tls = &http.Server{Handler: http.HandlerFunc(s.serveTLS), TLSConfig: tlsConfig,
		ReadHeaderTimeout: headerTimeout, IdleTimeout: 2 * time.Minute, ErrorLog: errLog}
	s.plain = &http.Server{Handler: http.HandlerFunc(s.servePlain),
		ReadHeaderTimeout: headerTimeout, IdleTimeout: 2 * time.Minute, ErrorLog: errLog}
	return s, nil
}

// validOnion reports whether s is a v3 onion name (56 base32 characters, then .onion).
func validOnion(s string) bool {
	label, ok := strings.CutSuffix(s, ".onion")
	if !ok || len(label) != 56 {
		return false
	}
	for _, c := range label {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// ServeTLS serves HTTPS on ln until Shutdown.
func (s *Server) ServeTLS(ln net.Listener) error {
	err := s.tls.ServeTLS(s.wrap(ln), "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ServePlain serves plain HTTP on ln until Shutdown: a redirect to https:// while a valid
// certificate is loaded, else the app itself.
func (s *Server) ServePlain(ln net.Listener) error {
	err := s.plain.Serve(s.wrap(ln))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (s *Server) wrap(ln net.Listener) net.Listener {
	return &proxyListener{Listener: ln, trusted: s.cfg.EdgeAddr, timeout: headerTimeout}
}

// Shutdown stops accepting and waits for the requests in flight (until ctx ends).
func (s *Server) Shutdown(ctx context.Context) error {
	return errors.Join(s.tls.Shutdown(ctx), s.plain.Shutdown(ctx))
}

func (s *Server) serveTLS(w http.ResponseWriter, r *http.Request) {
	if s.location {
		w.Header().Set("Onion-Location", "http://"+s.cfg.Onion+r.URL.RequestURI())
	}
	s.proxy.ServeHTTP(w, r)
}

func (s *Server) servePlain(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.Certs.Valid(time.Now()) {
		s.proxy.ServeHTTP(w, r)
		return
	}
	http.Redirect(w, r, "https://"+s.cfg.Host+r.URL.RequestURI(), http.StatusMovedPermanently)
}

func (s *Server) newProxy() *httputil.ReverseProxy {
	target := &url.URL{Scheme: "http", Host: net.JoinHostPort("localhost", strconv.Itoa(int(s.cfg.Target)))}
	tr := &http.Transport{
		DialContext:           s.dialApp,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // an app may think as long as it likes
		DisableCompression:    true,
	}
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host // the app sees the name the visitor asked for
			r.SetXForwarded()
			r.Out.Header.Set("Forwarded", forwarded(r.In))
		},
		Transport:  tr,
		BufferPool: &bufferPool{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.cfg.Log.Warn("front: proxy to the app failed", "target", s.cfg.Target, "err", err)
			w.WriteHeader(http.StatusBadGateway)
		},
		ErrorLog: slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelDebug),
	}
}

// dialApp connects to the app on the pod's loopback: IPv6 first, IPv4 if nothing listens there.
func (s *Server) dialApp(ctx context.Context, _, _ string) (net.Conn, error) {
	var d net.Dialer
	port := strconv.Itoa(int(s.cfg.Target))
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("::1", port))
	if err == nil || !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.EADDRNOTAVAIL) {
		return c, err
	}
	return d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", port))
}

// forwarded is the RFC 7239 Forwarded header of a request: who asked, for which host, over what.
func forwarded(r *http.Request) string {
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	f := "for=" + forwardedNode(r.RemoteAddr) + ";proto=" + proto
	if r.Host != "" && isToken(r.Host) {
		f += ";host=" + strconv.Quote(r.Host)
	}
	return f
}

func forwardedNode(remote string) string {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return "unknown"
	}
	a := ap.Addr().Unmap()
	if a.Is4() {
		return a.String()
	}
	return `"[` + a.WithZone("").String() + `]"`
}

// isToken reports whether a Host value is plain enough to quote as is.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// bufferPool lends the 32 kB buffers the proxy copies bodies through (one per request otherwise).
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if buf, ok := b.p.Get().(*[]byte); ok {
		return *buf
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
