package cli

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer is a log's output read while the log is written.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestReloadRefusesABadTorrc: on SIGHUP (systemctl reload) a config whose torrc_extra line the
// managed tor's torrc refuses is refused, and the running daemon stays; a good config restarts
// it.
func TestReloadRefusesABadTorrc(t *testing.T) {
	path := filepath.Join(t.TempDir(), "onionpod.toml")
	write := func(extra string) {
		t.Helper()
		cfg := "[tor]\ntorrc_extra = [\"DisableNetwork 1\", \"" + extra + "\"]\n"
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var logged lockedBuffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	hup := make(chan os.Signal)
	restarted := make(chan struct{})
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		defer close(done)
		reloadOnHangup(ctx, log, path, hup, func() { close(restarted) })
	}()
	hangup := func() {
		t.Helper()
		select {
		case hup <- syscall.SIGHUP:
		case <-done:
			t.Fatalf("the daemon no longer waits for SIGHUP; log:\n%s", logged.String())
		}
	}

	write("ControlP 9051")
	hangup()
	for deadline := time.Now().Add(time.Minute); !strings.Contains(logged.String(), "config reload"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP was not handled")
		}
	}
	select {
	case <-restarted:
		t.Fatalf("the daemon restarted with a torrc_extra line onion refuses; log:\n%s", logged.String())
	default:
	}
	if got := logged.String(); !strings.Contains(got, "config reload refused") || !strings.Contains(got, "torrc_extra[1]") {
		t.Errorf("the refusal is not logged, naming the line:\n%s", got)
	}

	write("NumEntryGuards 2")
	hangup()
	select {
	case <-restarted:
	case <-time.After(10 * time.Second):
		t.Fatalf("a good config did not restart the daemon; log:\n%s", logged.String())
	}
	<-done
}
