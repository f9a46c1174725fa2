package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
	"github.com/onionpod/onionpod/pods"
)

// apiOnly is a daemon with a store but no parts, serving its LocalAPI on a unix socket: enough
// for the API's own bounds (waits need only the store and the statuses).
func apiOnly(t *testing.T) (*Daemon, *http.Client) {
	t.Helper()
	cfg := configs.Default()
	cfg.StateDir = t.TempDir()
	d, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = d.store.Update(t.Context(), func(tx *store.Tx) error {
		return tx.Put(store.App{Name: "web", Containers: []store.Container{{Name: "web", Image: "r.example/web:1"}}, Stopped: true})
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &http.Server{Handler: d.handler(), ConnContext: withPeer, BaseContext: func(net.Listener) context.Context { return ctx }}
	go srv.Serve(ln)
	t.Cleanup(func() { cancel(); srv.Close(); d.handlers.closeAndWait() })
	return d, &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
}

// TestWaitsAreBounded: a client (uid) holds at most maxWaitsPerUID waits at once; the next one
// is refused (429) at once; a wait never lasts longer than the daemon's bound.
func TestWaitsAreBounded(t *testing.T) {
	d, hc := apiOnly(t)
	d.maxWait = 300 * time.Millisecond
	start := time.Now()
	resp, err := hc.Get("http://onionpod/v1/apps/web/wait?for=running&timeout=1h")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || time.Since(start) > time.Minute {
		t.Fatalf("a wait of 1h: %s after %v, want 504 after the daemon's bound", resp.Status, time.Since(start))
	}

	d.maxWait = time.Minute
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	for range maxWaitsPerUID {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://onionpod/v1/apps/web/wait?for=running&timeout=1m", nil)
			if resp, err := hc.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	waitUntil(t, "the waits are held", func() bool {
		d.waits.mu.Lock()
		defer d.waits.mu.Unlock()
		return d.waits.n[0] == maxWaitsPerUID
	})
	resp, err = hc.Get("http://onionpod/v1/apps/web/wait?for=running&timeout=1m")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("wait number %d: %s, want 429", maxWaitsPerUID+1, resp.Status)
	}
	cancel()
	wg.Wait()
	waitUntil(t, "the waits are released", func() bool {
		d.waits.mu.Lock()
		defer d.waits.mu.Unlock()
		return len(d.waits.n) == 0
	})
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not %s after a minute", what)
		}
	}
}

// TestStatusCodes: the HTTP status of an error is decided by its errkind kind alone, whichever
// package the error comes from.
func TestStatusCodes(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{names.App("Bad_Name"), http.StatusBadRequest},
		{fmt.Errorf("pods: %w", pods.ErrBadInput), http.StatusBadRequest},
		{configs.ErrInvalid, http.StatusBadRequest},
		{errkind.NotFoundf("store: app %q: no such app", "x"), http.StatusNotFound},
		{fmt.Errorf("wrapped: %w", errkind.Conflictf("changed")), http.StatusConflict},
		{&http.MaxBytesError{Limit: 10}, http.StatusRequestEntityTooLarge},
		{errors.New("disk on fire"), http.StatusInternalServerError},
	}
	for _, c := range cases {
		w := httptest.NewRecorder()
		fail(w, c.err)
		if w.Code != c.want {
			t.Errorf("%v: %d, want %d", c.err, w.Code, c.want)
		}
	}
}
