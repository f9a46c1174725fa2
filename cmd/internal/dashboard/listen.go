package dashboard

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ListenTCP listens on every address. An address not on the host yet (the ULA appears with
// the first pod's shim) is bound anyway (IP_FREEBIND) and answers once it is there.
func ListenTCP(addrs []string) ([]net.Listener, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1) })
		return errors.Join(err, serr)
	}}
	var out []net.Listener
	for _, a := range addrs {
		l, err := lc.Listen(context.Background(), "tcp", a)
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, fmt.Errorf("dashboard: listen %s: %w", a, err)
		}
		out = append(out, l)
	}
	return out, nil
}

// ListenUnix opens the unix socket tor forwards the dashboard's .onion to. It sits in a
// directory only tor and root may enter (the control socket's), so the socket itself is open
// to whoever reaches it: tor. A stale socket is replaced.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		l.Close()
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	return l, nil
}

// Serve serves h on every listener until ctx ends, then shuts down within 2 s.
func Serve(ctx context.Context, h http.Handler, ls ...net.Listener) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, len(ls))
	for _, l := range ls {
		go func() { errc <- srv.Serve(l) }()
	}
	<-ctx.Done()
	shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(shut)
	var errs []error
	for range ls {
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
