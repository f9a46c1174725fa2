package front

import (
	"context"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
)

// TestMain doubles as the benchmark's front process: with FRONT_BENCH_LISTEN set, the test binary
// serves a front (like `onionpod internal front`, in a process of its own as in a pod) instead of
// running tests.
func TestMain(m *testing.M) {
	if addr := os.Getenv("FRONT_BENCH_LISTEN"); addr != "" {
		os.Exit(benchFront(addr))
	}
	os.Exit(m.Run())
}

func benchFront(addr string) int {
	bundle, err := os.ReadFile(os.Getenv("FRONT_BENCH_BUNDLE"))
	if err != nil {
		return 1
	}
	target, _ := strconv.Atoi(os.Getenv("FRONT_BENCH_TARGET"))
	certs := &Certs{}
	if err := certs.Load(bundle); err != nil {
		return 1
	}
	srv, err := New(Config{Host: "blog.box.example", Target: uint16(target), Certs: certs})
	if err != nil {
		return 1
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go srv.ServeTLS(ln)
	<-ctx.Done()
	return 0
}
