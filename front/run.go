package front

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// FeedSocket is where the daemon's feed listens; units see it read-only (the connection needs no
// write access).
const FeedSocket = "/run/onionpod/feed/feed.sock"

// Credential names: what a front's and the edge's units load at start (LoadCredential=).
const (
	BundleCredential = "bundle"
	RoutesCredential = "routes"
)

// RunFront runs an app's front until ctx ends: it loads the certificate systemd gave it (if any),
// follows the feed for renewals, and serves TLSPort and HTTPPort on every address of the pod.
// On ctx's end it stops accepting and gives requests in flight 10 s.
func RunFront(ctx context.Context, cfg Config, feed string, log *slog.Logger) error {
	if cfg.Certs == nil {
		cfg.Certs = &Certs{}
	}
	cfg.Log = log
	if b, err := readCredential(BundleCredential); err == nil {
		if err := cfg.Certs.Load(b); err != nil {
			log.Warn("front: the certificate given at start is not usable", "err", err)
		}
	}
	srv, err := New(cfg)
	if err != nil {
		return err
	}
	tlsLn, err := net.Listen("tcp", net.JoinHostPort("::", strconv.Itoa(int(TLSPort))))
	if err != nil {
		return fmt.Errorf("front: %w", err)
	}
	plainLn, err := net.Listen("tcp", net.JoinHostPort("::", strconv.Itoa(int(HTTPPort))))
	if err != nil {
		tlsLn.Close()
		return fmt.Errorf("front: %w", err)
	}
	go Follow(ctx, feed, log, cfg.Certs.Load)
	errs := make(chan error, 2)
	go func() { errs <- srv.ServeTLS(tlsLn) }()
	go func() { errs <- srv.ServePlain(plainLn) }()
	select {
	case err := <-errs:
		return fmt.Errorf("front: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// RunEdge runs the box's edge until ctx ends: it loads the routes given at start (if any),
// follows the feed for new ones, and routes the https and http listen addresses.
func RunEdge(ctx context.Context, httpsAddr, httpAddr, feed string, log *slog.Logger) error {
	r := NewRouter(log)
	apply := func(b []byte) error {
		var routes Routes
		if err := json.Unmarshal(b, &routes); err != nil {
			return fmt.Errorf("edge: routes: %w", err)
		}
		r.SetRoutes(routes)
		return nil
	}
	if b, err := readCredential(RoutesCredential); err == nil {
		if err := apply(b); err != nil {
			log.Warn("edge: the routes given at start are not usable", "err", err)
		}
	}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
		r.Close()
	}()
	errs := make(chan error, 2)
	for _, l := range []struct {
		addr  string
		serve func(net.Listener) error
	}{{httpsAddr, r.ServeTLS}, {httpAddr, r.ServeHTTP}} {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			return fmt.Errorf("edge: %w", err)
		}
		lns = append(lns, ln)
		go func() { errs <- l.serve(ln) }()
	}
	go Follow(ctx, feed, log, apply)
	select {
	case err := <-errs:
		return fmt.Errorf("edge: %w", err)
	case <-ctx.Done():
		return nil
	}
}

// readCredential reads a credential systemd loaded for this unit.
func readCredential(name string) ([]byte, error) {
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if dir == "" {
		return nil, errors.New("no credentials")
	}
	return os.ReadFile(filepath.Join(dir, name))
}

// MarshalRoutes is the feed's and the credential's form of a routing table.
func MarshalRoutes(r Routes) ([]byte, error) { return json.Marshal(r) }

// EdgeAddrOf is the host's address in a ULA prefix (prefix::1): where the edge connects from.
func EdgeAddrOf(ula netip.Prefix) netip.Addr {
	a := ula.Masked().Addr().As16()
	a[15] = 1
	return netip.AddrFrom16(a)
}
